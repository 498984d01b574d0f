add_executable(wsqd main.c server.c session.c http_api.c http_gate.c req.c consumer.c out.c
               auth.c log.c notify.c)
target_include_directories(wsqd PRIVATE ${PROJECT_SOURCE_DIR}/common)
target_link_libraries(wsqd PRIVATE wsqstore wsqproto wsqconfig wsqjwt PkgConfig::LWS PkgConfig::SSL PkgConfig::CRYPTO
                      PkgConfig::YAML)
