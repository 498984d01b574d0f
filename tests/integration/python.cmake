# How every Python test is registered: one unittest program per file (or chaos.py), run by
# /usr/bin/python3 with Debian's python3-websockets 10.x (never a pip copy), on the one harness
# tests/integration/py/wsqharness.py. Included by tests/integration/py, tests/integration/wsqctl,
# tests/faults and tests/chaos.
#
# Exit status: 0 every test ran and passed, 1 a failure, 77 a skip (ctest reports "Skipped";
# with WSQ_REQUIRE_ALL=1, which tools/test.sh sets when CI=true, a skip is a failure).
include_guard(GLOBAL)

# wsq_python_test(NAME <ctest name> SCRIPT <file> TIMEOUT <seconds, normal build>
#                 LABELS <label...> [ARGS <arg...>] [ENV <VAR=value...>])
# A missing script is a configure error: a test never vanishes silently.
function(wsq_python_test)
  cmake_parse_arguments(T "" "NAME;SCRIPT;TIMEOUT" "LABELS;ARGS;ENV" ${ARGN})
  if(NOT T_NAME OR NOT T_SCRIPT OR NOT T_TIMEOUT OR NOT T_LABELS)
    message(FATAL_ERROR "wsq_python_test: NAME, SCRIPT, TIMEOUT and LABELS are required")
  endif()
  if(NOT EXISTS ${T_SCRIPT})
    message(FATAL_ERROR "${T_NAME}: the test file ${T_SCRIPT} does not exist")
  endif()
  # Sanitizer builds run several times slower: the harness scales every wait by WSQ_SLOW (it
  # also finds an instrumented wsqd by itself), and the ctest timeout is scaled the same.
  if(WSQ_SANITIZE OR WSQ_TSAN)
    set(slow 3)
  else()
    set(slow 1)
  endif()
  add_test(NAME ${T_NAME} COMMAND /usr/bin/python3 ${T_SCRIPT} ${T_ARGS})
  math(EXPR t "${T_TIMEOUT} * ${slow}")
  set(env PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 WSQ_SLOW=${slow} ${T_ENV})
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${t}
                       SKIP_RETURN_CODE 77 ENVIRONMENT "${env}")
endfunction()

# wsq_python_tests_listed(<dir> <test_x.py...>): every test_*.py in dir must be listed (a test
# file missing from its CMakeLists.txt would never run), and every listed file must exist.
function(wsq_python_tests_listed dir)
  file(GLOB found RELATIVE ${dir} ${dir}/test_*.py)
  foreach(f IN LISTS found)
    if(NOT f IN_LIST ARGN)
      message(FATAL_ERROR "${dir}/${f} is not in the list of tests of ${dir}/CMakeLists.txt")
    endif()
  endforeach()
  foreach(f IN LISTS ARGN)
    if(NOT EXISTS ${dir}/${f})
      message(FATAL_ERROR "${dir}/CMakeLists.txt lists ${f}, which does not exist")
    endif()
  endforeach()
endfunction()

# wsq_labels(<out var> <name> <list of threaded names> <label...>): the labels, plus "threaded"
# (tools/tsan.sh runs the tests labelled threaded) when name is in the threaded list.
function(wsq_labels out name threaded)
  set(labels ${ARGN})
  if(name IN_LIST ${threaded})
    list(APPEND labels threaded)
  endif()
  set(${out} ${labels} PARENT_SCOPE)
endfunction()

# wsq_check_subset(<what> <list var> <of list var>): a typo in a list of names is a configure
# error, not a label that silently selects nothing.
function(wsq_check_subset what sub of)
  foreach(n IN LISTS ${sub})
    if(NOT n IN_LIST ${of})
      message(FATAL_ERROR "${what}: ${n} is not a test of this directory")
    endif()
  endforeach()
endfunction()
