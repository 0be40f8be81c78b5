# drover_guest_test(NAME
#   VMM qemu|drover          which VMM boots the guest
#   GUEST file               a guest built here (hello.elf, bootinfo.bzImage, ...)
#   EXPECT files...          expectation files under expect/ (run-guest.sh)
#   CODE c                   the guest ends through the debug-exit port with code c
#   | END poweroff|reset|crash|running
#                            ... or so; "running" guests never stop: the test
#                            ends once every expectation matched
#   [CMDLINE s] [MEMORY mib (256)] [CPUS n (1)] [TIMEOUT sec (30)]
#   [INITRD size]            a random initrd of that size is made at test time;
#                            {INITRD_SIZE} and {INITRD_CRC32} in CMDLINE name it
#   [INPUT prompt text]      once the output shows prompt, text is typed on the
#                            console (stdin)
#   [EXTRA_ARGS args...])    more VMM arguments
#
# Exit statuses: QEMU gives (c << 1) | 1 for debug-exit code c and 0 for a
# poweroff; run with -no-reboot, a reset or triple fault also gives 0. drover-vmm
# gives 16 + c, 0 for a poweroff, 2 for a crash, 3 for a reset under
# --on-reboot exit.

set(GUEST_RUNNER ${CMAKE_CURRENT_SOURCE_DIR}/run-guest.sh)
set(GUEST_EXPECT_DIR ${CMAKE_CURRENT_SOURCE_DIR}/expect)
find_program(QEMU_SYSTEM_X86_64 qemu-system-x86_64)
if(NOT QEMU_SYSTEM_X86_64)
  message(STATUS "qemu-system-x86_64 not found: the guest.qemu.* tests will fail "
                 "(install the Debian package qemu-system-x86)")
  set(QEMU_SYSTEM_X86_64 qemu-system-x86_64)
endif()

function(drover_guest_test name)
  cmake_parse_arguments(T "" "VMM;GUEST;CODE;END;CMDLINE;MEMORY;CPUS;INITRD;TIMEOUT"
                        "EXPECT;EXTRA_ARGS;INPUT" ${ARGN})
  if(NOT T_MEMORY)
    set(T_MEMORY 256)
  endif()
  if(NOT T_CPUS)
    set(T_CPUS 1)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 30)
  endif()
  set(test guest.${T_VMM}.${name})
  set(guest ${CMAKE_CURRENT_BINARY_DIR}/${T_GUEST})
  set(runner_args --timeout ${T_TIMEOUT})
  foreach(e ${T_EXPECT})
    list(APPEND runner_args --expect ${GUEST_EXPECT_DIR}/${e})
  endforeach()
  if(DEFINED T_INPUT)
    list(APPEND runner_args --input ${T_INPUT})
  endif()
  set(initrd "")
  if(T_INITRD)
    set(initrd ${CMAKE_CURRENT_BINARY_DIR}/initrd/${test}.img)
    list(APPEND runner_args --initrd ${initrd} ${T_INITRD})
  endif()

  if(T_VMM STREQUAL "qemu")
    set(cmd ${QEMU_SYSTEM_X86_64} -machine microvm,accel=kvm,acpi=on -cpu qemu64,-pni
        -m ${T_MEMORY} -smp ${T_CPUS} -kernel ${guest} -nodefaults -no-user-config
        -nographic -serial stdio -device isa-debug-exit,iobase=0x501,iosize=2)
    if(DEFINED T_CMDLINE)
      list(APPEND cmd -append "${T_CMDLINE}")
    endif()
    if(initrd)
      list(APPEND cmd -initrd ${initrd})
    endif()
    if(DEFINED T_CODE)
      math(EXPR status "(${T_CODE} << 1) | 1")
    elseif(T_END STREQUAL "poweroff")
      set(status 0)
    elseif(T_END STREQUAL "reset" OR T_END STREQUAL "crash")
      set(status 0)
      list(APPEND cmd -no-reboot)
    endif()
  elseif(T_VMM STREQUAL "drover")
    set(cmd $<TARGET_FILE:drover-vmm> --kernel ${guest})
    if(initrd)
      list(APPEND cmd --initrd ${initrd})
    endif()
    if(DEFINED T_CMDLINE)
      list(APPEND cmd --cmdline "${T_CMDLINE}")
    endif()
    list(APPEND cmd --memory ${T_MEMORY}M --cpus ${T_CPUS} --serial stdio)
    if(DEFINED T_CODE)
      math(EXPR status "16 + ${T_CODE}")
    elseif(T_END STREQUAL "poweroff")
      set(status 0)
    elseif(T_END STREQUAL "crash")
      set(status 2)
    elseif(T_END STREQUAL "reset")
      set(status 3)
      list(APPEND cmd --on-reboot exit)
    endif()
  else()
    message(FATAL_ERROR "drover_guest_test(${name}): VMM must be qemu or drover")
  endif()
  list(APPEND cmd ${T_EXTRA_ARGS})

  if(T_END STREQUAL "running")
    list(APPEND runner_args --until-match)
  elseif(DEFINED status)
    list(APPEND runner_args --status ${status})
  else()
    message(FATAL_ERROR "drover_guest_test(${name}): give CODE or END")
  endif()

  math(EXPR ctest_timeout "${T_TIMEOUT} + 15")
  add_test(NAME ${test} COMMAND ${GUEST_RUNNER} ${runner_args} -- ${cmd})
  set_tests_properties(${test} PROPERTIES LABELS vmm TIMEOUT ${ctest_timeout})
endfunction()

# The cases, each for both VMMs. What both must print is in one expectation
# file per case; files named *-qemu / *-drover add what only one of them does.
set(BOOTINFO_CMDLINE
    "bootinfo.initrd_size={INITRD_SIZE} bootinfo.initrd_crc32={INITRD_CRC32}")
foreach(vmm qemu drover)
  set(extra_bootinfo "")
  set(extra_expect "")
  if(vmm STREQUAL "drover")
    # drover's memory map is sorted; QEMU's firmware leaves its own unsorted.
    set(extra_bootinfo " bootinfo.sorted_map")
    set(extra_expect bootinfo-sorted.txt)
  endif()

  drover_guest_test(hello VMM ${vmm} GUEST hello.elf CODE 0 EXPECT hello.txt)
  drover_guest_test(hello-exit7 VMM ${vmm} GUEST hello.elf CMDLINE "hello.exit=7" CODE 7
                    EXPECT hello-exit7.txt)
  drover_guest_test(hello-poweroff VMM ${vmm} GUEST hello.elf CMDLINE "hello.poweroff"
                    END poweroff EXPECT hello-poweroff.txt)
  drover_guest_test(hello-reset VMM ${vmm} GUEST hello.elf CMDLINE "hello.reset"
                    END reset EXPECT hello-reset.txt)
  drover_guest_test(hello-crash VMM ${vmm} GUEST hello.elf CMDLINE "hello.crash"
                    END crash EXPECT hello-crash.txt)
  drover_guest_test(hello-ticks VMM ${vmm} GUEST hello.elf CMDLINE "hello.ticks"
                    END running EXPECT hello-ticks.txt)
  drover_guest_test(hello-bzimage VMM ${vmm} GUEST hello.bzImage CODE 0 EXPECT hello.txt)
  # The console takes input: a line typed on stdin comes back from the guest.
  drover_guest_test(hello-echo VMM ${vmm} GUEST hello.elf CMDLINE "hello.echo"
                    INPUT "hello: type a line" "typed on the console 42" CODE 0
                    EXPECT hello-echo.txt)

  drover_guest_test(bootinfo-64m VMM ${vmm} GUEST bootinfo.elf MEMORY 64 INITRD 1234567
                    CMDLINE "bootinfo.mem_mib=64 ${BOOTINFO_CMDLINE}${extra_bootinfo}"
                    CODE 0 EXPECT bootinfo.txt ${extra_expect})
  drover_guest_test(bootinfo-5g VMM ${vmm} GUEST bootinfo.elf MEMORY 5120 INITRD 3000001
                    CMDLINE "bootinfo.mem_mib=5120 ${BOOTINFO_CMDLINE}${extra_bootinfo}"
                    CODE 0 EXPECT bootinfo.txt bootinfo-highmem.txt ${extra_expect})
  drover_guest_test(bootinfo-bzimage VMM ${vmm} GUEST bootinfo.bzImage MEMORY 256
                    INITRD 777777
                    CMDLINE "bootinfo.mem_mib=256 ${BOOTINFO_CMDLINE}${extra_bootinfo}"
                    CODE 0 EXPECT bootinfo.txt bootinfo-bzimage-${vmm}.txt ${extra_expect})

  foreach(n 1 2 4)
    drover_guest_test(smp-${n} VMM ${vmm} GUEST smp.elf CPUS ${n} MEMORY 64
                      CMDLINE "smp.expect=${n}" CODE 0 EXPECT smp-${n}.txt)
  endforeach()

  drover_guest_test(memtest-64m VMM ${vmm} GUEST memtest.elf MEMORY 64 CODE 0
                    EXPECT memtest.txt)
  # One 4 KiB page per 64 MiB: the host's first touch of a guest page costs a
  # fault (a 2 MiB one under QEMU: 0.2 ms, over 10 ms when the host is busy);
  # a full pass over 5 GiB takes 1.5-12 s on an idle host, in faults alone.
  drover_guest_test(memtest-5g VMM ${vmm} GUEST memtest.elf MEMORY 5120 TIMEOUT 60
                    CMDLINE "memtest.stride_kib=65536" CODE 0 EXPECT memtest-5g.txt)
endforeach()

# The 64-bit Linux entry of the ELF (drover chooses PVH for it otherwise).
drover_guest_test(bootinfo-linux64 VMM drover GUEST bootinfo.elf MEMORY 64 INITRD 1234567
                  CMDLINE "bootinfo.mem_mib=64 ${BOOTINFO_CMDLINE} bootinfo.sorted_map"
                  EXTRA_ARGS --boot-protocol linux64
                  CODE 0 EXPECT bootinfo.txt bootinfo-entry-linux64.txt bootinfo-sorted.txt)
