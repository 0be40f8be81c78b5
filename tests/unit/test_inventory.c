/* agent/inventory.c: the parsers on captured /proc files (this project's
 * PVM build host, taken as is; an Intel VT-x host and an AMD-V host written
 * by hand from the kernel's format), the collector on a fake /proc and /sys
 * tree, and on the real host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent_fs.h"
#include "inventory.h"
#include "test_agent_helpers.h"

/* /proc/cpuinfo of a build host: AMD EPYC under nested PVM KVM (no svm or
 * vmx flag, module kvm_pvm), 2 CPUs; captured 2026-12-04. */
static const char pvm_cpuinfo[] =
	"processor\t: 0\n"
	"vendor_id\t: AuthenticAMD\n"
	"cpu family\t: 25\n"
	"model\t\t: 17\n"
	"model name\t: AMD EPYC\n"
	"stepping\t: 1\n"
	"microcode\t: 0x1000065\n"
	"cpu MHz\t\t: 2596.134\n"
	"cache size\t: 1024 KB\n"
	"physical id\t: 0\n"
	"siblings\t: 2\n"
	"core id\t\t: 0\n"
	"cpu cores\t: 2\n"
	"apicid\t\t: 0\n"
	"initial apicid\t: 0\n"
	"fpu\t\t: yes\n"
	"fpu_exception\t: yes\n"
	"cpuid level\t: 28\n"
	"wp\t\t: yes\n"
	"flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
	"clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc "
	"rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq "
	"ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx "
	"f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse "
	"3dnowprefetch osvw topoext cpuid_fault vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 "
	"erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd "
	"sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr "
	"arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg "
	"avx512_vpopcntdq rdpid fsrm\n"
	"bugs\t\t: sysret_ss_attrs null_seg spectre_v1 spectre_v2 spec_store_bypass srso "
	"spectre_v2_user tsa\n"
	"bogomips\t: 5192.26\n"
	"TLB size\t: 3584 4K pages\n"
	"clflush size\t: 64\n"
	"cache_alignment\t: 64\n"
	"address sizes\t: 48 bits physical, 48 bits virtual\n"
	"power management:\n"
	"\n"
	"processor\t: 1\n"
	"vendor_id\t: AuthenticAMD\n"
	"cpu family\t: 25\n"
	"model\t\t: 17\n"
	"model name\t: AMD EPYC\n"
	"stepping\t: 1\n"
	"microcode\t: 0x1000065\n"
	"cpu MHz\t\t: 2596.134\n"
	"cache size\t: 1024 KB\n"
	"physical id\t: 0\n"
	"siblings\t: 2\n"
	"core id\t\t: 1\n"
	"cpu cores\t: 2\n"
	"apicid\t\t: 1\n"
	"initial apicid\t: 1\n"
	"fpu\t\t: yes\n"
	"fpu_exception\t: yes\n"
	"cpuid level\t: 28\n"
	"wp\t\t: yes\n"
	"flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
	"clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc "
	"rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq "
	"ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx "
	"f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse "
	"3dnowprefetch osvw topoext cpuid_fault vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 "
	"erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd "
	"sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr "
	"arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg "
	"avx512_vpopcntdq rdpid fsrm\n"
	"bugs\t\t: sysret_ss_attrs null_seg spectre_v1 spectre_v2 spec_store_bypass srso "
	"spectre_v2_user tsa\n"
	"bogomips\t: 5192.26\n"
	"TLB size\t: 3584 4K pages\n"
	"clflush size\t: 64\n"
	"cache_alignment\t: 64\n"
	"address sizes\t: 48 bits physical, 48 bits virtual\n"
	"power management:\n"
	"\n";

/* /proc/meminfo of the same host. */
static const char pvm_meminfo[] =
	"MemTotal:       24683784 kB\n"
	"MemFree:        23111680 kB\n"
	"MemAvailable:   24179144 kB\n"
	"Buffers:           61828 kB\n"
	"Cached:          1036936 kB\n"
	"SwapCached:            0 kB\n"
	"Active:           586548 kB\n"
	"Inactive:         526828 kB\n"
	"Active(anon):         36 kB\n"
	"Inactive(anon):    24756 kB\n"
	"Active(file):     586512 kB\n"
	"Inactive(file):   502072 kB\n"
	"Unevictable:       15632 kB\n"
	"Mlocked:           12888 kB\n"
	"SwapTotal:             0 kB\n"
	"SwapFree:              0 kB\n"
	"Zswap:                 0 kB\n"
	"Zswapped:              0 kB\n"
	"Dirty:              4380 kB\n"
	"Writeback:             0 kB\n"
	"AnonPages:         30388 kB\n"
	"Mapped:            44608 kB\n"
	"Shmem:             10152 kB\n"
	"KReclaimable:     287664 kB\n"
	"Slab:             327800 kB\n"
	"SReclaimable:     287664 kB\n"
	"SUnreclaim:        40136 kB\n"
	"KernelStack:        1872 kB\n"
	"PageTables:         2380 kB\n"
	"SecPageTables:         0 kB\n"
	"NFS_Unstable:          0 kB\n"
	"Bounce:                0 kB\n"
	"WritebackTmp:          0 kB\n"
	"CommitLimit:    12341892 kB\n"
	"Committed_AS:     102972 kB\n"
	"VmallocTotal:   34359738367 kB\n"
	"VmallocUsed:       14652 kB\n"
	"VmallocChunk:          0 kB\n"
	"Percpu:              744 kB\n"
	"AnonHugePages:         0 kB\n"
	"ShmemHugePages:        0 kB\n"
	"ShmemPmdMapped:        0 kB\n"
	"FileHugePages:      2048 kB\n"
	"FilePmdMapped:         0 kB\n"
	"Balloon:               0 kB\n"
	"HugePages_Total:       0\n"
	"HugePages_Free:        0\n"
	"HugePages_Rsvd:        0\n"
	"HugePages_Surp:        0\n"
	"Hugepagesize:       2048 kB\n"
	"Hugetlb:               0 kB\n"
	"DirectMap4k:       28672 kB\n"
	"DirectMap2M:     2068480 kB\n"
	"DirectMap1G:    25165824 kB\n";

/* An Intel VT-x host, 4 logical CPUs (2 cores, HT), written from the
 * kernel's format (arch/x86/kernel/cpu/proc.c): vmx, and VT-x features in
 * "vmx flags". */
static const char vtx_cpuinfo[] =
	"processor\t: 0\n"
	"vendor_id\t: GenuineIntel\n"
	"cpu family\t: 6\n"
	"model\t\t: 85\n"
	"model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n"
	"stepping\t: 7\n"
	"cpu MHz\t\t: 2100.000\n"
	"flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
	"clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm "
	"constant_tsc pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 fma cx16 "
	"xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand "
	"lahf_lm abm flexpriority ept vpid ept_ad fsgsbase bmi1 avx2 smep bmi2 erms "
	"invpcid avx512f avx512dq avx512cd avx512bw avx512vl\n"
	"vmx flags\t: vnmi preemption_timer posted_intr invvpid ept_x_only ept_ad "
	"ept_1gb flexpriority apicv tsc_offset vtpr mtf vapic ept vpid unrestricted_guest\n"
	"bogomips\t: 4200.00\n"
	"\n"
	"processor\t: 1\n"
	"vendor_id\t: GenuineIntel\n"
	"model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n"
	"flags\t\t: fpu vme vmx ept vpid\n"
	"\n"
	"processor\t: 2\n"
	"model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n"
	"flags\t\t: fpu vme vmx ept vpid\n"
	"\n"
	"processor\t: 3\n"
	"model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n"
	"flags\t\t: fpu vme vmx ept vpid\n";

/* An AMD-V host, written by hand: svm, no vmx. */
static const char svm_cpuinfo[] =
	"processor\t: 0\n"
	"vendor_id\t: AuthenticAMD\n"
	"model name\t: AMD EPYC 7302 16-Core Processor\n"
	"flags\t\t: fpu vme de pse tsc msr pae svm npt lbrv nrip_save\n"
	"\n"
	"processor\t: 1\n"
	"model name\t: AMD EPYC 7302 16-Core Processor\n"
	"flags\t\t: fpu vme de pse tsc msr pae svm npt lbrv nrip_save\n";

/* A host with 1 GiB huge pages reserved. */
static const char hugepage_meminfo[] =
	"MemTotal:       263846212 kB\n"
	"MemFree:        120000000 kB\n"
	"MemAvailable:   130000000 kB\n"
	"HugePages_Total:      16\n"
	"HugePages_Free:        4\n"
	"HugePages_Rsvd:        0\n"
	"HugePages_Surp:        0\n"
	"Hugepagesize:    1048576 kB\n";

static void test_cpuinfo_pvm(void **state)
{
	struct inventory inv;

	inventory_init(&inv);
	assert_int_equal(inventory_parse_cpuinfo(&inv, pvm_cpuinfo), 0);
	assert_int_equal(inv.cpus, 2);
	assert_string_equal(inv.cpu_model, "AMD EPYC");
	assert_true(inv.ncpu_flags > 100);
	assert_string_equal(inv.cpu_flags[0], "fpu");
	assert_string_equal(inv.cpu_flags[inv.ncpu_flags - 1], "fsrm");
	assert_true(inventory_has_flag(&inv, "avx512f"));
	assert_false(inventory_has_flag(&inv, "svm"));
	assert_false(inventory_has_flag(&inv, "vmx"));
	/* Neither flag: what KVM runs on is its vendor module. */
	assert_string_equal(inventory_virt(&inv, "kvm_pvm"), "kvm_pvm");
	assert_string_equal(inventory_virt(&inv, NULL), "none");
	inventory_free(&inv);
}

static void test_cpuinfo_vtx(void **state)
{
	struct inventory inv;

	inventory_init(&inv);
	assert_int_equal(inventory_parse_cpuinfo(&inv, vtx_cpuinfo), 0);
	assert_int_equal(inv.cpus, 4);
	assert_string_equal(inv.cpu_model, "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz");
	/* The first CPU's "flags", not "vmx flags". */
	assert_true(inventory_has_flag(&inv, "vmx"));
	assert_true(inventory_has_flag(&inv, "avx512vl"));
	assert_false(inventory_has_flag(&inv, "unrestricted_guest"));
	assert_string_equal(inventory_virt(&inv, "kvm_intel"), "vmx");
	inventory_free(&inv);
}

static void test_cpuinfo_svm(void **state)
{
	struct inventory inv;

	inventory_init(&inv);
	assert_int_equal(inventory_parse_cpuinfo(&inv, svm_cpuinfo), 0);
	assert_int_equal(inv.cpus, 2);
	assert_string_equal(inventory_virt(&inv, "kvm_amd"), "svm");
	inventory_free(&inv);
}

static void test_cpuinfo_bad(void **state)
{
	struct inventory inv;

	inventory_init(&inv);
	assert_int_equal(inventory_parse_cpuinfo(&inv, ""), -EINVAL);
	assert_int_equal(inventory_parse_cpuinfo(&inv, "garbage\nmore garbage"), -EINVAL);
	/* A processor line and nothing else is still a CPU (other architectures). */
	assert_int_equal(inventory_parse_cpuinfo(&inv, "processor : 0\n"), 0);
	assert_int_equal(inv.cpus, 1);
	assert_int_equal(inv.ncpu_flags, 0);
	assert_string_equal(inventory_virt(&inv, NULL), "none");
	/* Parsing again replaces what was there. */
	assert_int_equal(inventory_parse_cpuinfo(&inv, svm_cpuinfo), 0);
	assert_int_equal(inv.cpus, 2);
	inventory_free(&inv);
}

static void test_meminfo(void **state)
{
	struct inventory inv;

	inventory_init(&inv);
	assert_int_equal(inventory_parse_meminfo(&inv, pvm_meminfo), 0);
	assert_int_equal(inv.mem_total, 24683784ULL * 1024);
	assert_int_equal(inv.mem_available, 24179144ULL * 1024);
	assert_int_equal(inv.hugepages_total, 0);
	assert_int_equal(inv.hugepage_size, 2048ULL * 1024);

	assert_int_equal(inventory_parse_meminfo(&inv, hugepage_meminfo), 0);
	assert_int_equal(inv.hugepages_total, 16);
	assert_int_equal(inv.hugepages_free, 4);
	assert_int_equal(inv.hugepage_size, 1ULL << 30);

	assert_int_equal(inventory_parse_meminfo(&inv, "MemFree: 1 kB\n"), -EINVAL);
	assert_int_equal(inventory_parse_meminfo(&inv, ""), -EINVAL);
	inventory_free(&inv);
}

static void test_loadavg_and_params(void **state)
{
	double load = -1;

	assert_int_equal(inventory_parse_loadavg("3.04 2.31 1.77 1/115 23846\n", &load), 0);
	assert_true(load > 3.03 && load < 3.05);
	assert_int_equal(inventory_parse_loadavg("", &load), -EINVAL);
	assert_int_equal(inventory_parse_loadavg("high", &load), -EINVAL);
	assert_int_equal(inventory_parse_loadavg(NULL, &load), -EINVAL);

	assert_string_equal(inventory_parse_bool_param("Y\n"), "yes");
	assert_string_equal(inventory_parse_bool_param("1\n"), "yes");
	assert_string_equal(inventory_parse_bool_param("N\n"), "no");
	assert_string_equal(inventory_parse_bool_param("0"), "no");
	assert_string_equal(inventory_parse_bool_param(NULL), "not available");
	assert_string_equal(inventory_parse_bool_param("?"), "not available");
}

static void put(const char *root, const char *rel, const char *text)
{
	char path[512], dir[512];
	char *slash;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	*slash = 0;
	assert_int_equal(fs_mkdir_p(dir, 0755), 0);
	assert_int_equal(th_write(path, text), 0);
}

/* A VT-x host as the collector sees it: kvm_intel with ept on, vpid off. */
static void test_collect_fake_vtx_host(void **state)
{
	char root[64], proc[128], sys[128];
	struct inventory inv;
	struct inventory_sources src;

	th_tmpdir(root, sizeof(root));
	snprintf(proc, sizeof(proc), "%s/proc", root);
	snprintf(sys, sizeof(sys), "%s/sys", root);
	put(proc, "cpuinfo", vtx_cpuinfo);
	put(proc, "meminfo", hugepage_meminfo);
	put(proc, "loadavg", "0.50 0.40 0.30 2/300 1234\n");
	put(sys, "module/kvm_intel/parameters/ept", "Y\n");
	put(sys, "module/kvm_intel/parameters/vpid", "N\n");
	src = (struct inventory_sources){ .proc = proc, .sys = sys, .kvm_dev = "/nonexistent/kvm" };

	inventory_init(&inv);
	assert_int_equal(inventory_collect(&inv, &src), 0);
	assert_int_equal(inv.cpus, 4);
	assert_string_equal(inv.virt, "vmx");
	assert_string_equal(inv.ept, "yes");
	assert_string_equal(inv.vpid, "no");
	assert_int_equal(inv.hugepages_free, 4);
	assert_true(inv.load1 > 0.49 && inv.load1 < 0.51);
	assert_false(inv.kvm);
	assert_int_equal(inv.nkvm_caps, 0);
	inventory_free(&inv);
	th_rmtree(root);
}

/* Files missing altogether: nothing fails, EPT says "not available". */
static void test_collect_sparse_host(void **state)
{
	char root[64], proc[128], sys[128];
	struct inventory inv;
	struct inventory_sources src;

	th_tmpdir(root, sizeof(root));
	snprintf(proc, sizeof(proc), "%s/proc", root);
	snprintf(sys, sizeof(sys), "%s/sys", root);
	put(proc, "cpuinfo", pvm_cpuinfo);
	put(sys, "module/kvm_pvm/parameters/force", "N\n");
	src = (struct inventory_sources){ .proc = proc, .sys = sys, .kvm_dev = "/nonexistent/kvm" };

	inventory_init(&inv);
	assert_int_equal(inventory_collect(&inv, &src), 0);
	assert_string_equal(inv.virt, "kvm_pvm");
	assert_string_equal(inv.ept, "not available");
	assert_string_equal(inv.vpid, "not available");
	assert_int_equal(inv.mem_total, 0);
	inventory_free(&inv);
	th_rmtree(root);
}

/* This host, whatever it is. */
static void test_collect_real_host(void **state)
{
	struct inventory inv;
	struct utsname un;
	int fd;

	inventory_init(&inv);
	assert_int_equal(inventory_collect(&inv, NULL), 0);
	assert_true(inv.cpus > 0);
	assert_int_equal(inv.cpus, (uint32_t)sysconf(_SC_NPROCESSORS_ONLN));
	assert_true(inv.mem_total > 0);
	assert_true(inv.mem_available <= inv.mem_total);
	if (access("/sys/module/kvm_intel", F_OK) != 0) {
		assert_string_equal(inv.ept, "not available");
		assert_string_equal(inv.vpid, "not available");
	}
	uname(&un);
	assert_string_equal(inv.kernel, un.release);
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	assert_int_equal(inv.kvm, fd >= 0);
	if (fd >= 0) {
		bool irqfd = false;

		close(fd);
		assert_true(inv.kvm_max_vcpus >= 1);
		for (size_t i = 0; i < inv.nkvm_caps; i++)
			irqfd |= !strcmp(inv.kvm_caps[i], "irqfd");
		assert_true(irqfd);
	}
	inventory_free(&inv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpuinfo_pvm),
		cmocka_unit_test(test_cpuinfo_vtx),
		cmocka_unit_test(test_cpuinfo_svm),
		cmocka_unit_test(test_cpuinfo_bad),
		cmocka_unit_test(test_meminfo),
		cmocka_unit_test(test_loadavg_and_params),
		cmocka_unit_test(test_collect_fake_vtx_host),
		cmocka_unit_test(test_collect_sparse_host),
		cmocka_unit_test(test_collect_real_host),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
