# drover-agent's integration tests (tests/integration/agent/): a program
# plays the controller over the real protocol against the real drover-agent,
# which runs real drover-vmm processes booting the hello guest. One ctest
# test per group so that ctest -j runs them side by side.
if(TARGET drover-agent)
  add_executable(test_agent_e2e agent/test_agent_e2e.c agent/agenttest.c)
  target_include_directories(test_agent_e2e PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/agent)
  target_link_libraries(test_agent_e2e PRIVATE drover-wire PkgConfig::CMOCKA_INT)
  foreach(group basic restart network faults)
    add_test(NAME integration.agent.${group}
             COMMAND test_agent_e2e $<TARGET_FILE:drover-agent> $<TARGET_FILE:drover-vmm>
                     ${GUEST_BIN}/hello.elf ${group})
    set_tests_properties(integration.agent.${group} PROPERTIES LABELS control TIMEOUT 120)
  endforeach()
endif()
