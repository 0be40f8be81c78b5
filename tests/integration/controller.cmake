# droverd's integration tests (tests/integration/controller/): the real
# droverd over real HTTP, with ctl-fakeagent playing the agents over the
# real protocol; every response is checked against controller/openapi.yaml.
if(NOT TARGET droverd)
  return()
endif()

add_executable(ctl-fakeagent ${CMAKE_CURRENT_SOURCE_DIR}/controller/fakeagent.c)
target_link_libraries(ctl-fakeagent PRIVATE drover-wire PkgConfig::JANSSON)

find_package(Python3 3.9 COMPONENTS Interpreter)
set(ctl_py_ok FALSE)
if(Python3_Interpreter_FOUND)
  execute_process(COMMAND ${Python3_EXECUTABLE} -c "import yaml, jsonschema"
                  RESULT_VARIABLE ctl_py_rc OUTPUT_QUIET ERROR_QUIET)
  if(ctl_py_rc EQUAL 0)
    set(ctl_py_ok TRUE)
  endif()
endif()
if(NOT ctl_py_ok)
  message(STATUS "droverd integration tests skipped: they need python3 with python3-yaml and "
                 "python3-jsonschema (deploy/install-deps.sh installs them)")
  return()
endif()

# One ctest test per group, so that ctest -j runs them side by side.
foreach(group Api Agents Restart Cli)
  add_test(NAME integration.controller.${group}
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/controller/test_droverd.py
                   --droverd $<TARGET_FILE:droverd> --fakeagent $<TARGET_FILE:ctl-fakeagent>
                   --openapi ${CMAKE_SOURCE_DIR}/controller/openapi.yaml ${group})
  set_tests_properties(integration.controller.${group} PROPERTIES LABELS control TIMEOUT 180)
endforeach()
