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

# ---- virtio-blk guests (blkcheck, blkbench) ----
# drover_blk_test(NAME
#   VMM qemu|drover
#   FORMAT raw|qcow2 SIZE size   the image, made afresh under disks/ at test time
#   [DISK opts]                  disk options, comma-separated: cache=none|writeback|
#                                writethrough|unsafe, snapshot=on, readonly=on,
#                                serial=ID, queues=N
#   CMDLINE s EXPECT files...    the run (CODE 0 unless given)
#   [CMDLINE2 s EXPECT2 files... [DISK2 opts]]
#                                a second run on the same image
#   [GUEST elf (blkcheck.elf)] [CODE c] [TIMEOUT sec (30)]
#   [QEMU_MACHINE m] [QEMU_ARGS args...]
#                                QEMU only: another -machine (default microvm with
#                                pcie=on), more arguments (bus=... in DISK places
#                                the device on a bridge they add)
#   [PREFILL seed [LAYOUT l]] [UNCHANGED] [CHECK seed])
#                                before: blkcheck's pattern written by the host tool
#                                (a qcow2 image laid out by qemu-img as LAYOUT says:
#                                run-blk.sh --layout); after: image file unchanged /
#                                pattern checked by it
# QEMU gets -machine microvm with pcie=on, the image as -drive and a
# virtio-blk-pci device (modern only); drover-vmm gets --disk.
set(GUEST_BLK_RUNNER ${CMAKE_CURRENT_SOURCE_DIR}/run-blk.sh)

# The VMM command for one run: vmm, guest, cmdline, image, format, disk
# options, QEMU machine, then more QEMU arguments -> out_var.
function(drover_blk_command out_var vmm guest cmdline image format opts machine)
  set(bus "")
  set(cache writeback)
  set(snapshot off)
  set(readonly off)
  set(serial "")
  set(queues "")
  string(REPLACE "," ";" opts "${opts}")
  foreach(o ${opts})
    if(NOT o MATCHES "^(cache|snapshot|readonly|serial|queues|bus)=(.+)$")
      message(FATAL_ERROR "drover_blk_test: disk option '${o}' unknown")
    endif()
    set(${CMAKE_MATCH_1} ${CMAKE_MATCH_2})
  endforeach()
  if(vmm STREQUAL "qemu")
    set(drive "if=none,id=d0,file=${image},format=${format},cache=${cache}")
    if(snapshot STREQUAL "on")
      string(APPEND drive ",snapshot=on")
    endif()
    if(readonly STREQUAL "on")
      string(APPEND drive ",readonly=on")
    endif()
    set(device "virtio-blk-pci,drive=d0,disable-legacy=on")
    if(serial)
      string(APPEND device ",serial=${serial}")
    endif()
    if(queues)
      string(APPEND device ",num-queues=${queues}")
    endif()
    if(bus)
      string(APPEND device ",bus=${bus}")
    endif()
    set(cmd ${QEMU_SYSTEM_X86_64} -machine ${machine}
        -cpu qemu64,-pni -m 256 -smp 1 -kernel ${guest} -nodefaults -no-user-config
        -nographic -serial stdio -device isa-debug-exit,iobase=0x501,iosize=2
        ${ARGN} -drive ${drive} -device ${device} -append "${cmdline}")
  else()
    if(bus OR ARGN)
      message(FATAL_ERROR "drover_blk_test: bus= and QEMU_ARGS are for QEMU only")
    endif()
    set(disk "path=${image},format=${format},cache=${cache},snapshot=${snapshot}")
    string(APPEND disk ",readonly=${readonly},id=d0")
    if(serial)
      string(APPEND disk ",serial=${serial}")
    endif()
    if(queues)
      string(APPEND disk ",queues=${queues}")
    endif()
    set(cmd $<TARGET_FILE:drover-vmm> --kernel ${guest} --cmdline "${cmdline}"
        --memory 256M --cpus 1 --serial stdio --disk ${disk})
  endif()
  set(${out_var} ${cmd} PARENT_SCOPE)
endfunction()

function(drover_blk_test name)
  cmake_parse_arguments(T "UNCHANGED"
    "VMM;GUEST;FORMAT;SIZE;DISK;DISK2;CMDLINE;CMDLINE2;CODE;TIMEOUT;PREFILL;LAYOUT;CHECK;QEMU_MACHINE"
    "EXPECT;EXPECT2;QEMU_ARGS" ${ARGN})
  if(NOT T_QEMU_MACHINE)
    set(T_QEMU_MACHINE microvm,accel=kvm,pcie=on,acpi=on)
  endif()
  if(NOT T_GUEST)
    set(T_GUEST blkcheck.elf)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 30)
  endif()
  if(NOT DEFINED T_CODE)
    set(T_CODE 0)
  endif()
  if(NOT DEFINED T_DISK2)
    set(T_DISK2 "${T_DISK}")
  endif()
  if(T_VMM STREQUAL "qemu")
    math(EXPR status "(${T_CODE} << 1) | 1")
  elseif(T_VMM STREQUAL "drover")
    math(EXPR status "16 + ${T_CODE}")
  else()
    message(FATAL_ERROR "drover_blk_test(${name}): VMM must be qemu or drover")
  endif()
  set(test guest.${T_VMM}.${name})
  set(guest ${CMAKE_CURRENT_BINARY_DIR}/${T_GUEST})
  set(image ${CMAKE_CURRENT_BINARY_DIR}/disks/${test}.${T_FORMAT})

  set(args --image ${image} --format ${T_FORMAT} --size ${T_SIZE}
      --tool $<TARGET_FILE:blkpattern>)
  if(DEFINED T_PREFILL)
    list(APPEND args --prefill ${T_PREFILL})
  endif()
  if(DEFINED T_LAYOUT)
    list(APPEND args --layout ${T_LAYOUT})
  endif()
  if(T_UNCHANGED)
    list(APPEND args --unchanged)
  endif()
  if(DEFINED T_CHECK)
    list(APPEND args --check ${T_CHECK})
  endif()
  list(APPEND args --)

  set(runs 1)
  if(DEFINED T_CMDLINE2)
    set(runs 2)
  endif()
  foreach(run RANGE 1 ${runs})
    if(run EQUAL 1)
      set(cmdline "${T_CMDLINE}")
      set(expect ${T_EXPECT})
      set(opts "${T_DISK}")
    else()
      list(APPEND args ---)
      set(cmdline "${T_CMDLINE2}")
      set(expect ${T_EXPECT2})
      set(opts "${T_DISK2}")
    endif()
    list(APPEND args --timeout ${T_TIMEOUT} --status ${status})
    foreach(e ${expect})
      list(APPEND args --expect ${GUEST_EXPECT_DIR}/${e})
    endforeach()
    drover_blk_command(cmd ${T_VMM} ${guest} "${cmdline}" ${image} ${T_FORMAT} "${opts}"
                       ${T_QEMU_MACHINE} ${T_QEMU_ARGS})
    list(APPEND args -- ${cmd})
  endforeach()

  math(EXPR ctest_timeout "${T_TIMEOUT} * ${runs} + 30")
  add_test(NAME ${test} COMMAND ${GUEST_BLK_RUNNER} ${args})
  set_tests_properties(${test} PROPERTIES LABELS disks TIMEOUT ${ctest_timeout})
endfunction()

# The cases, under QEMU and (once drover-vmm has virtio-blk) under drover.
# A raw image of 32 MiB is written whole; a qcow2 image of 3 GiB gets the
# spread of regions (blkpattern.h): cluster and L2-table boundaries, the end.
set(BLK_VMMS qemu)
if(DROVER_HAVE_VIRTIO_BLK)
  list(APPEND BLK_VMMS drover)
endif()
set(BLK_RAW_SIZE 32M)
set(BLK_RAW_SECTORS 65536)
set(BLK_QCOW2_SIZE 3G)
set(BLK_QCOW2_SECTORS 6291456)
foreach(vmm ${BLK_VMMS})
  foreach(cache none writeback writethrough unsafe)
    drover_blk_test(blkcheck-raw-${cache} VMM ${vmm} FORMAT raw SIZE ${BLK_RAW_SIZE}
                    DISK "cache=${cache}" CHECK 21
                    CMDLINE "blkcheck.seed=21 blkcheck.sectors=${BLK_RAW_SECTORS}"
                    EXPECT blkcheck.txt blkcheck-whole.txt blkcheck-ecam.txt)
    drover_blk_test(blkcheck-qcow2-${cache} VMM ${vmm} FORMAT qcow2 SIZE ${BLK_QCOW2_SIZE}
                    DISK "cache=${cache}" CHECK 22
                    CMDLINE "blkcheck.seed=22 blkcheck.sectors=${BLK_QCOW2_SECTORS}"
                    EXPECT blkcheck.txt blkcheck-spread.txt blkcheck-ecam.txt)
  endforeach()
  # snapshot=on: the guest writes, the file keeps what it had.
  drover_blk_test(blkcheck-raw-snapshot VMM ${vmm} FORMAT raw SIZE ${BLK_RAW_SIZE}
                  DISK "cache=none,snapshot=on" PREFILL 3 UNCHANGED CHECK 3
                  CMDLINE "blkcheck.seed=4" EXPECT blkcheck.txt)
  drover_blk_test(blkcheck-qcow2-snapshot VMM ${vmm} FORMAT qcow2 SIZE ${BLK_QCOW2_SIZE}
                  DISK "cache=writeback,snapshot=on" UNCHANGED
                  CMDLINE "blkcheck.seed=5" EXPECT blkcheck.txt)
  # readonly=on: RO offered, writes fail with IOERR, reads see the host's pattern.
  drover_blk_test(blkcheck-raw-readonly VMM ${vmm} FORMAT raw SIZE ${BLK_RAW_SIZE}
                  DISK "cache=none,readonly=on" PREFILL 6 UNCHANGED CHECK 6
                  CMDLINE "blkcheck.seed=6 blkcheck.readonly" EXPECT blkcheck-readonly.txt)
  drover_blk_test(blkcheck-queues4 VMM ${vmm} FORMAT raw SIZE ${BLK_RAW_SIZE}
                  DISK "cache=none,queues=4" CHECK 7
                  CMDLINE "blkcheck.seed=7" EXPECT blkcheck.txt blkcheck-queues4.txt)
  drover_blk_test(blkcheck-serial VMM ${vmm} FORMAT raw SIZE ${BLK_RAW_SIZE}
                  DISK "cache=writeback,serial=drover-disk-0042"
                  CMDLINE "blkcheck.seed=8 blkcheck.serial=drover-disk-0042"
                  EXPECT blkcheck.txt blkcheck-serial.txt)
  # What one VM wrote (and flushed), the next VM and the host tool read.
  foreach(format raw qcow2)
    if(format STREQUAL "raw")
      set(size ${BLK_RAW_SIZE})
    else()
      set(size ${BLK_QCOW2_SIZE})
    endif()
    drover_blk_test(blkcheck-${format}-two-runs VMM ${vmm} FORMAT ${format} SIZE ${size}
                    DISK "cache=none" CHECK 9
                    CMDLINE "blkcheck.seed=9" EXPECT blkcheck.txt
                    CMDLINE2 "blkcheck.seed=9 blkcheck.verify_only"
                    EXPECT2 blkcheck-verify.txt)
  endforeach()
  # Images that qemu-img laid out: the guest reads qemu-img's pattern back,
  # then writes its own over it (into compressed, shared, backing-file and
  # subcluster clusters), which the host tool reads back; qemu-img check
  # after.
  foreach(layout compressed c512 c2m extl2 backing snapshot)
    drover_blk_test(blkcheck-qemu-img-${layout} VMM ${vmm} FORMAT qcow2 SIZE ${BLK_RAW_SIZE}
                    DISK "cache=writeback" PREFILL 13 LAYOUT ${layout} CHECK 14
                    CMDLINE "blkcheck.seed=13 blkcheck.verify_only"
                    EXPECT blkcheck-verify.txt
                    CMDLINE2 "blkcheck.seed=14 blkcheck.sectors=${BLK_RAW_SECTORS}"
                    EXPECT2 blkcheck.txt blkcheck-whole.txt)
  endforeach()
  # Configuration mechanism #1 instead of ECAM. QEMU's microvm has no ports
  # 0xCF8/0xCFC: q35 has them (and SeaBIOS, which places the BARs: 3 s more).
  set(machine "")
  if(vmm STREQUAL "qemu")
    set(machine QEMU_MACHINE q35,accel=kvm)
  endif()
  drover_blk_test(blkcheck-cf8 VMM ${vmm} FORMAT raw SIZE ${BLK_RAW_SIZE} ${machine}
                  DISK "cache=writeback" CMDLINE "blkcheck.seed=10 blkcheck.pci=cf8"
                  EXPECT blkcheck.txt blkcheck-cf8.txt)
  drover_blk_test(blkbench VMM ${vmm} GUEST blkbench.elf FORMAT raw SIZE 64M
                  DISK "cache=none" CMDLINE "blkbench.ms=100" EXPECT blkbench.txt)
endforeach()

# Behind PCIe root ports (QEMU only; drover-vmm has no bridges): bus numbers
# and bridge windows come from the guest.
drover_blk_test(blkcheck-bridge VMM qemu FORMAT raw SIZE ${BLK_RAW_SIZE}
                QEMU_ARGS -device pcie-root-port,id=rp0,chassis=1,slot=1
                          -device pcie-root-port,id=rp1,chassis=2,slot=2
                DISK "cache=writeback,bus=rp1" CHECK 12 CMDLINE "blkcheck.seed=12"
                EXPECT blkcheck.txt blkcheck-bridge-qemu.txt)

# Crash safety: the VMM is killed (SIGKILL) while blkcrash writes and flushes
# into a fresh qcow2; qemu-img check must find no corruption and every
# flushed byte must be there (run-blkcrash.sh). QEMU proves the test itself.
foreach(vmm ${BLK_VMMS})
  foreach(variant "writeback;64K" "none;4K")
    list(GET variant 0 cache)
    list(GET variant 1 cluster)
    set(test guest.${vmm}.blkcrash-${cache}-${cluster})
    set(image ${CMAKE_CURRENT_BINARY_DIR}/disks/${test}.qcow2)
    drover_blk_command(cmd ${vmm} ${CMAKE_CURRENT_BINARY_DIR}/blkcrash.elf
                       "blkcrash.seed={SEED}" "{IMAGE}" qcow2 "cache=${cache}"
                       microvm,accel=kvm,pcie=on,acpi=on)
    add_test(NAME ${test}
             COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/run-blkcrash.sh --vmm ${vmm}
                     --tool $<TARGET_FILE:blkpattern> --image ${image} --rounds 8
                     --cluster-size ${cluster} -- ${cmd})
    set_tests_properties(${test} PROPERTIES LABELS disks TIMEOUT 300)
  endforeach()
endforeach()
