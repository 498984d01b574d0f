add_executable(wsqd main.c server.c mailbox.c core.c ws.c fe_raw.c fe_wsq.c fe_http.c admin.c pull.c
               delivery.c metrics.c http_gate.c req.c out.c auth.c log.c notify.c jwks.c)
target_include_directories(wsqd PRIVATE ${PROJECT_SOURCE_DIR}/common)
target_link_libraries(wsqd PRIVATE wsqstore wsqproto wsqconfig wsqjwt PkgConfig::LWS PkgConfig::SSL PkgConfig::CRYPTO
                      PkgConfig::YAML PkgConfig::CURL)
