# Install rules, man pages and the Debian package (CPack DEB) of wsq.
#
# Included from the top-level CMakeLists.txt, after the broker and the tools are defined:
#     include(packaging/packaging.cmake)
#
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release   # a package is built from a Release build
#   cmake --build build                      # also generates the man pages and packaging/wsq.yaml
#   cmake --build build --target package     # (or: cd build && cpack) -> build/wsq_<ver>-1_<arch>.deb
#   cmake --install build --prefix /usr      # a plain install without the package
#
# The package always has the Debian layout, whatever CMAKE_INSTALL_PREFIX the build was configured
# with: /usr/sbin/wsqd, /usr/bin/wsqctl, /usr/bin/wsq-bench, /etc/wsq/wsq.yaml (a conffile),
# /lib/systemd/system/wsqd.service and the man pages under /usr/share/man. A plain
# `cmake --install` with another prefix puts the config under PREFIX/etc/wsq and the unit under
# PREFIX/lib/systemd/system, with the unit's paths rewritten to match.
#
# Not installed: the storage library and its headers (static, internal to wsqd and wsqctl; no
# stable ABI) and wsq-storage-bench (a developer tool).

set(WSQ_PKG_DIR ${CMAKE_CURRENT_LIST_DIR})
get_filename_component(WSQ_TOP_DIR ${CMAKE_CURRENT_LIST_DIR} DIRECTORY)
set(WSQ_PKG_OUT ${CMAKE_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${WSQ_PKG_OUT})
include(GNUInstallDirs)

# ---- programs --------------------------------------------------------------------------------
# A daemon goes to sbin (Debian: /usr/sbin/wsqd); the CLI and the bench go to bin.
install(TARGETS wsqd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
foreach(tool wsqctl wsq-bench)
  if(TARGET ${tool})
    install(TARGETS ${tool} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# ---- the packaged config: conf/wsq.yaml with storage.path /var/lib/wsq ------------------------
# Generated at configure time (and again whenever conf/wsq.yaml changes), so that it can never
# diverge from the embedded default in anything but the data directory.
set(WSQ_CONF_SRC ${WSQ_TOP_DIR}/conf/wsq.yaml)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${WSQ_CONF_SRC})
file(READ ${WSQ_CONF_SRC} _wsq_conf)
string(REGEX MATCHALL "\n  path: \\./data\n" _wsq_path_lines "${_wsq_conf}")
list(LENGTH _wsq_path_lines _wsq_n)
if(NOT _wsq_n EQUAL 1)
  message(FATAL_ERROR "packaging: conf/wsq.yaml must contain exactly one line '  path: ./data' "
                      "(storage.path), found ${_wsq_n}; update packaging/packaging.cmake")
endif()
string(REPLACE "\n  path: ./data\n" "\n  path: /var/lib/wsq\n" _wsq_conf "${_wsq_conf}")
string(CONCAT _wsq_conf
  "# /etc/wsq/wsq.yaml: the configuration of the wsqd service (Debian package wsq).\n"
  "# It is conf/wsq.yaml with storage.path set to /var/lib/wsq; man wsq.yaml(5) describes every key.\n"
  "# After a change:  wsqd --check-config /etc/wsq/wsq.yaml && systemctl restart wsqd\n"
  "#\n"
  "${_wsq_conf}")
file(WRITE ${WSQ_PKG_OUT}/wsq.yaml.new "${_wsq_conf}")
file(COPY_FILE ${WSQ_PKG_OUT}/wsq.yaml.new ${WSQ_PKG_OUT}/wsq.yaml ONLY_IF_DIFFERENT)
file(REMOVE ${WSQ_PKG_OUT}/wsq.yaml.new)

# ---- man pages: wsqd(8), wsqctl(1), wsq-bench(1) from --help, wsq.yaml(5) from conf/wsq.yaml ---
# help2man runs the freshly built programs, so a page cannot drift from --help; packaging/man/*.h2m
# add the sections --help has no room for (FILES, SEE ALSO, ...).
find_program(WSQ_HELP2MAN help2man)
find_program(WSQ_GZIP gzip)
find_program(WSQ_PERL perl)
set(WSQ_MAN_DIR ${WSQ_PKG_OUT}/man)
set(WSQ_MAN_PAGES "")
if(WSQ_HELP2MAN AND WSQ_GZIP AND WSQ_PERL)
  file(MAKE_DIRECTORY ${WSQ_MAN_DIR})
  # help2man puts the date into the page: the build date, or SOURCE_DATE_EPOCH when the caller
  # sets it (reproducible builds). The version comes from the project, which is also what
  # --version prints first (WSQ_VERSION); the rest of --version (library versions) describes the
  # build machine, not the program, and stays out of the page. h2m-fixup.pl makes the SYNOPSIS
  # from a "usage:" line and lays command lists out as tagged paragraphs.
  function(wsq_help2man target section name)
    set(page ${WSQ_MAN_DIR}/${target}.${section})
    add_custom_command(OUTPUT ${page}.gz
      COMMAND ${WSQ_HELP2MAN} --no-info --section=${section} --name=${name}
              --version-string=${wsq_VERSION} --include=${WSQ_PKG_DIR}/man/${target}.h2m
              --output=${page} $<TARGET_FILE:${target}>
      COMMAND ${WSQ_PERL} ${WSQ_PKG_DIR}/man/h2m-fixup.pl ${page}
      COMMAND ${WSQ_GZIP} -9 -n -k -f ${page}
      DEPENDS ${target} ${WSQ_PKG_DIR}/man/${target}.h2m ${WSQ_PKG_DIR}/man/h2m-fixup.pl
      COMMENT "help2man: ${target}(${section})" VERBATIM)
    set(WSQ_MAN_PAGES ${WSQ_MAN_PAGES} ${page}.gz PARENT_SCOPE)
    install(FILES ${page}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  endfunction()
  wsq_help2man(wsqd 8 "durable WebSocket message broker")
  if(TARGET wsqctl)
    wsq_help2man(wsqctl 1 "inspect, repair, back up and use a wsq store and broker")
  endif()
  if(TARGET wsq-bench)
    wsq_help2man(wsq-bench 1 "load generator for wsq and other WebSocket brokers")
  endif()
  set(page ${WSQ_MAN_DIR}/wsq.yaml.5)
  add_custom_command(OUTPUT ${page}.gz
    COMMAND ${WSQ_PERL} ${WSQ_PKG_DIR}/man/yaml2man.pl --version ${wsq_VERSION}
            ${WSQ_CONF_SRC} ${page}
    COMMAND ${WSQ_GZIP} -9 -n -k -f ${page}
    DEPENDS ${WSQ_PKG_DIR}/man/yaml2man.pl ${WSQ_CONF_SRC}
    COMMENT "yaml2man: wsq.yaml(5)" VERBATIM)
  list(APPEND WSQ_MAN_PAGES ${page}.gz)
  install(FILES ${page}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
  add_custom_target(wsq-manpages ALL DEPENDS ${WSQ_MAN_PAGES})
  set(WSQ_HAVE_MANPAGES ON)
else()
  message(WARNING "packaging: help2man, gzip or perl not found: no man pages "
                  "(Debian: apt-get install help2man; tools/deps.sh installs it)")
  set(WSQ_HAVE_MANPAGES OFF)
endif()

# ---- documentation ---------------------------------------------------------------------------
install(FILES ${WSQ_TOP_DIR}/README.md ${WSQ_TOP_DIR}/docs/OPERATIONS.md
              ${WSQ_TOP_DIR}/docs/PROTOCOL.md ${WSQ_TOP_DIR}/docs/wsqctl.md
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/wsq)
install(FILES ${WSQ_TOP_DIR}/conf/wsq.yaml ${WSQ_TOP_DIR}/conf/examples/production.yaml
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/wsq/examples)
# Debian wants the license as /usr/share/doc/wsq/copyright.
if(EXISTS ${WSQ_TOP_DIR}/LICENSE)
  install(FILES ${WSQ_TOP_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/wsq
          RENAME copyright)
endif()

# ---- /etc/wsq/wsq.yaml and the systemd unit --------------------------------------------------
# Their place depends on the prefix at *install* time (cpack installs with prefix /usr, a plain
# `cmake --install` with whatever prefix it is given), so it is computed then: prefix /usr puts
# them in /etc/wsq and /lib/systemd/system, any other prefix under PREFIX/etc/wsq and
# PREFIX/lib/systemd/system. The unit's /usr/sbin/wsqd, /etc/wsq and /usr/share/doc/wsq are
# rewritten to match.
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(_wsq_etc /etc/wsq)
    set(_wsq_unitdir /lib/systemd/system)
  else()
    set(_wsq_etc \"\${CMAKE_INSTALL_PREFIX}/etc/wsq\")
    set(_wsq_unitdir \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
  endif()
  file(INSTALL DESTINATION \"\${_wsq_etc}\" TYPE FILE FILES \"${WSQ_PKG_OUT}/wsq.yaml\")
  file(READ \"${WSQ_PKG_DIR}/wsqd.service\" _wsq_unit)
  string(REPLACE /usr/sbin/wsqd \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SBINDIR}/wsqd\"
         _wsq_unit \"\${_wsq_unit}\")
  string(REPLACE /etc/wsq/ \"\${_wsq_etc}/\" _wsq_unit \"\${_wsq_unit}\")
  string(REPLACE /usr/share/doc/wsq/
         \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATAROOTDIR}/doc/wsq/\"
         _wsq_unit \"\${_wsq_unit}\")
  string(MD5 _wsq_key \"\${CMAKE_INSTALL_PREFIX}\")
  set(_wsq_tmp \"${WSQ_PKG_OUT}/unit-\${_wsq_key}\")
  file(WRITE \"\${_wsq_tmp}/wsqd.service\" \"\${_wsq_unit}\")
  file(INSTALL DESTINATION \"\${_wsq_unitdir}\" TYPE FILE FILES \"\${_wsq_tmp}/wsqd.service\")
")

# ---- the Debian package ----------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME wsq)
set(CPACK_PACKAGE_VERSION ${wsq_VERSION})
set(CPACK_PACKAGE_VENDOR "wsq")
set(CPACK_PACKAGE_CONTACT "wsq maintainers <wsq@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "durable WebSocket message broker")
# The long description: lines of at most 79 characters, as dpkg shows them.
string(CONCAT CPACK_PACKAGE_DESCRIPTION
  "wsqd accepts WebSocket and HTTP publishers and subscribers and commits every\n"
  "message to an LMDB-backed log on disk before it confirms it. A consumer that\n"
  "drops off receives everything it has not acknowledged when it reconnects.\n"
  "\n"
  "This package ships wsqd (the broker, run by systemd as the wsq user, data in\n"
  "/var/lib/wsq), wsqctl (the admin CLI) and wsq-bench (a load generator).")
# The package has the Debian layout whatever CMAKE_INSTALL_PREFIX says (see the top).
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Shared libraries are found by dpkg-shlibdeps (dpkg-dev). The libev event-loop plugin of
# libwebsockets is dlopen()ed at run time, so no tool can see it: it is named here. adduser is
# used by postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# (pkg-config says "4.1.6-" for Debian's lws: keep the numeric part)
string(REGEX MATCH "^[0-9]+(\\.[0-9]+)*" _wsq_lws_version "${LWS_VERSION}")
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, libwebsockets-evlib-ev (>= ${_wsq_lws_version})")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "curl")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${WSQ_PKG_DIR}/debian/conffiles ${WSQ_PKG_DIR}/debian/postinst ${WSQ_PKG_DIR}/debian/prerm
  ${WSQ_PKG_DIR}/debian/postrm)
include(CPack)
