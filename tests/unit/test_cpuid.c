/* CPUID tables: the operator's --cpu-features spec (parsing, errors, what a
 * '-' takes along), the per-vCPU table built from a synthetic supported
 * table (Intel- and AMD-like) for several vCPU counts, and the same on this
 * machine's real KVM_GET_SUPPORTED_CPUID, which KVM must accept back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>
#include <cmocka.h>

#include "cpuid.h"

#define SIG KVM_CPUID_FLAG_SIGNIFCANT_INDEX

/* Bits the tests name directly, from the Intel SDM / AMD APM. */
#define L1_ECX_SSE3      (1u << 0)
#define L1_ECX_SSSE3     (1u << 9)
#define L1_ECX_CX16      (1u << 13)
#define L1_ECX_SSE41     (1u << 19)
#define L1_ECX_X2APIC    (1u << 21)
#define L1_ECX_POPCNT    (1u << 23)
#define L1_ECX_XSAVE     (1u << 26)
#define L1_ECX_OSXSAVE   (1u << 27)
#define L1_ECX_AVX       (1u << 28)
#define L1_ECX_HYPERV    (1u << 31)
#define L1_EDX_SSE       (1u << 25)
#define L1_EDX_SSE2      (1u << 26)
#define L1_EDX_HTT       (1u << 28)
#define L7_EBX_AVX2      (1u << 5)
#define L7_EBX_AVX512F   (1u << 16)
#define L7_EBX_AVX512BW  (1u << 30)
#define L7_ECX_PKU       (1u << 3)
#define L7_ECX_OSPKE     (1u << 4)
#define L7_ECX_VAES      (1u << 9)
#define L7_EDX_AMX_TILE  (1u << 24)
#define L7_EDX_AMX_INT8  (1u << 25)
#define L71_EAX_AVXVNNI  (1u << 4)
#define LD1_EAX_XSAVEOPT (1u << 0)
#define LD1_EAX_XSAVES   (1u << 3)

/* ---- helpers ---------------------------------------------------------- */

static struct kvm_cpuid2 *table_new(unsigned cap)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + cap * sizeof(c->entries[0]));

	assert_non_null(c);
	return c;
}

static void add(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx, uint32_t flags,
		uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx)
{
	c->entries[c->nent++] = (struct kvm_cpuid_entry2){
		.function = fn, .index = idx, .flags = flags,
		.eax = eax, .ebx = ebx, .ecx = ecx, .edx = edx,
	};
}

static void add_vendor(struct kvm_cpuid2 *c, uint32_t max, const char *vendor)
{
	uint32_t r[3];

	memcpy(r, vendor, 12);
	add(c, 0, 0, 0, max, r[0], r[2], r[1]);
}

static void add_kvm_leaves(struct kvm_cpuid2 *c)
{
	uint32_t r[3];

	memcpy(r, "KVMKVMKVM\0\0\0", 12);
	add(c, 0x40000000, 0, 0, 0x40000001, r[0], r[1], r[2]);
	add(c, 0x40000001, 0, 0, 0x01007efb, 0, 0, 0);
}

/* Leaf 0xD of a CPU with x87, SSE, AVX, AVX-512, PKRU and AMX state. */
static void add_xsave_leaves(struct kvm_cpuid2 *c)
{
	add(c, 0xd, 0, SIG, 0x000602e7, 0x240, 0x2b00, 0);
	add(c, 0xd, 1, SIG, 0x1f, 0x240, 0x100, 0);
	add(c, 0xd, 2, SIG, 256, 576, 0, 0);
	add(c, 0xd, 5, SIG, 64, 1088, 0, 0);
	add(c, 0xd, 6, SIG, 512, 1152, 0, 0);
	add(c, 0xd, 7, SIG, 1024, 1664, 0, 0);
	add(c, 0xd, 9, SIG, 8, 2688, 0, 0);
	add(c, 0xd, 17, SIG, 64, 2752, 0, 0);
	add(c, 0xd, 18, SIG, 8192, 2816, 0, 6);
}

/* What KVM_GET_SUPPORTED_CPUID looks like on a recent Intel host, with the
 * topology leaves' subleaves all listed (zeroed, as KVM leaves them). */
static struct kvm_cpuid2 *intel_table(void)
{
	struct kvm_cpuid2 *c = table_new(64);

	add_vendor(c, 0x1f, "GenuineIntel");
	add(c, 1, 0, 0, 0x000806f8, 0x00000800,
	    0x7ffaf3bf & ~L1_ECX_HYPERV & ~L1_ECX_OSXSAVE, 0x0f8bfbff & ~L1_EDX_HTT);
	add(c, 4, 0, SIG, 0x00000121, 0x02c0003f, 0x3f, 0);      /* L1d */
	add(c, 4, 1, SIG, 0x00000122, 0x01c0003f, 0x3f, 0);      /* L1i */
	add(c, 4, 2, SIG, 0x00000143, 0x03c0003f, 0x7ff, 0);     /* L2 */
	add(c, 4, 3, SIG, 0x00000163, 0x03c0003f, 0xfff, 4);     /* L3 */
	add(c, 4, 4, SIG, 0, 0, 0, 0);
	add(c, 7, 0, SIG, 1, 0xf3bfa7eb, 0x1b415f6e | L7_ECX_PKU | L7_ECX_OSPKE,
	    0xffc34410 | L7_EDX_AMX_TILE);
	add(c, 7, 1, SIG, 0x00201c30 | L71_EAX_AVXVNNI, 0, 0, 0);
	add(c, 0xb, 0, SIG, 0, 0, 0, 0);
	add(c, 0xb, 1, SIG, 0, 0, 0, 0);
	add(c, 0xb, 2, SIG, 0, 0, 0, 0);
	add_xsave_leaves(c);
	add(c, 0x1f, 0, SIG, 0, 0, 0, 0);
	add(c, 0x1f, 1, SIG, 0, 0, 0, 0);
	add(c, 0x1f, 2, SIG, 0, 0, 0, 0);
	add_kvm_leaves(c);
	add(c, 0x80000000, 0, 0, 0x80000008, 0, 0, 0);
	add(c, 0x80000001, 0, 0, 0, 0, 0x00000121, 0x2c100800);
	add(c, 0x80000007, 0, 0, 0, 0, 0, 0x100);
	add(c, 0x80000008, 0, 0, 0x3030, 0x200, 0, 0);
	return c;
}

/* An AMD host whose KVM lists only subleaf 0 of leaf 0xB. */
static struct kvm_cpuid2 *amd_table(void)
{
	struct kvm_cpuid2 *c = table_new(64);

	add_vendor(c, 0x10, "AuthenticAMD");
	add(c, 1, 0, 0, 0x00a10f11, 0x00000800, 0x7ef8320b, 0x078bfbff);
	add(c, 7, 0, SIG, 0, 0xf1bf97a9 & ~L7_EBX_AVX512F, 0x00405fce, 0x10);
	add(c, 0xb, 0, SIG, 0, 0, 0, 0);
	add(c, 0xd, 0, SIG, 0x2e7, 0x240, 0xa88, 0);
	add(c, 0xd, 1, SIG, 0xf, 0x240, 0, 0);
	add(c, 0xd, 2, SIG, 256, 576, 0, 0);
	add_kvm_leaves(c);
	add(c, 0x80000000, 0, 0, 0x8000001f, 0, 0, 0);
	add(c, 0x80000001, 0, 0, 0x00a10f11, 0, 0x75c237ff & ~2u, 0x2fd3fbff);
	add(c, 0x80000008, 0, 0, 0x3030, 0x1ef1d257, 0x0000707f, 0);
	add(c, 0x8000001d, 0, SIG, 0x00004121, 0x01c0003f, 0x3f, 0);
	add(c, 0x8000001d, 1, SIG, 0x00004122, 0x01c0003f, 0x3f, 0);
	add(c, 0x8000001d, 2, SIG, 0x00004143, 0x01c0003f, 0x3ff, 2);
	add(c, 0x8000001d, 3, SIG, 0x0003c163, 0x03c0003f, 0x7fff, 1);
	add(c, 0x8000001d, 4, SIG, 0, 0, 0, 0);
	add(c, 0x8000001e, 0, 0, 7, 0x103, 0x300, 0);
	return c;
}

static struct kvm_cpuid2 *table_dup(const struct kvm_cpuid2 *c)
{
	size_t size = sizeof(*c) + c->nent * sizeof(c->entries[0]);
	struct kvm_cpuid2 *d = malloc(size);

	assert_non_null(d);
	memcpy(d, c, size);
	return d;
}

static struct kvm_cpuid_entry2 *must_find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, fn, idx);

	if (!e)
		fail_msg("no CPUID entry %#x.%u", fn, idx);
	return e;
}

static void parse_ok(const char *spec, struct cpuid_mask *m)
{
	char err[256];

	if (cpuid_mask_parse(spec, m, err, sizeof(err)) != 0)
		fail_msg("\"%s\" rejected: %s", spec ? spec : "(null)", err);
}

/* The override a mask holds for a named feature: 1 on, 0 off, -1 none. */
static int mask_says(const struct cpuid_mask *m, const char *name)
{
	uint32_t leaf, subleaf;
	enum cpuid_reg reg;
	uint8_t bit;

	assert_int_equal(cpuid_feature_lookup(name, &leaf, &subleaf, &reg, &bit), 0);
	for (unsigned i = 0; i < m->n; i++) {
		const struct cpuid_override *o = &m->o[i];

		if (o->leaf == leaf && o->subleaf == subleaf && o->reg == reg && o->bit == bit)
			return o->enable;
	}
	return -1;
}

/* ---- names and specs ---------------------------------------------------- */

static void test_lookup(void **state)
{
	static const struct {
		const char *name;
		uint32_t leaf, subleaf;
		enum cpuid_reg reg;
		uint8_t bit;
	} cases[] = {
		{ "pni", 1, 0, CPUID_ECX, 0 },
		{ "sse3", 1, 0, CPUID_ECX, 0 },
		{ "sse4_1", 1, 0, CPUID_ECX, 19 },
		{ "sse4.1", 1, 0, CPUID_ECX, 19 },
		{ "sse4-1", 1, 0, CPUID_ECX, 19 },
		{ "SSE4.2", 1, 0, CPUID_ECX, 20 },
		{ "lahf_lm", 0x80000001, 0, CPUID_ECX, 0 },
		{ "lahf-lm", 0x80000001, 0, CPUID_ECX, 0 },
		{ "tsc-deadline", 1, 0, CPUID_ECX, 24 },
		{ "x2apic", 1, 0, CPUID_ECX, 21 },
		{ "ht", 1, 0, CPUID_EDX, 28 },
		{ "sse2", 1, 0, CPUID_EDX, 26 },
		{ "avx2", 7, 0, CPUID_EBX, 5 },
		{ "avx512vl", 7, 0, CPUID_EBX, 31 },
		{ "avx512_vnni", 7, 0, CPUID_ECX, 11 },
		{ "avx512vnni", 7, 0, CPUID_ECX, 11 },
		{ "pku", 7, 0, CPUID_ECX, 3 },
		{ "md_clear", 7, 0, CPUID_EDX, 10 },
		{ "amx_tile", 7, 0, CPUID_EDX, 24 },
		{ "avx_vnni", 7, 1, CPUID_EAX, 4 },
		{ "avx512_bf16", 7, 1, CPUID_EAX, 5 },
		{ "xsaveopt", 0xd, 1, CPUID_EAX, 0 },
		{ "xsaves", 0xd, 1, CPUID_EAX, 3 },
		{ "syscall", 0x80000001, 0, CPUID_EDX, 11 },
		{ "nx", 0x80000001, 0, CPUID_EDX, 20 },
		{ "pdpe1gb", 0x80000001, 0, CPUID_EDX, 26 },
		{ "lm", 0x80000001, 0, CPUID_EDX, 29 },
		{ "abm", 0x80000001, 0, CPUID_ECX, 5 },
		{ "topoext", 0x80000001, 0, CPUID_ECX, 22 },
		{ "invtsc", 0x80000007, 0, CPUID_EDX, 8 },
		{ "clzero", 0x80000008, 0, CPUID_EBX, 0 },
		{ "wbnoinvd", 0x80000008, 0, CPUID_EBX, 9 },
	};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint32_t leaf = 0, subleaf = 0;
		enum cpuid_reg reg = CPUID_EAX;
		uint8_t bit = 0;

		if (cpuid_feature_lookup(cases[i].name, &leaf, &subleaf, &reg, &bit) != 0)
			fail_msg("'%s' not found", cases[i].name);
		if (leaf != cases[i].leaf || subleaf != cases[i].subleaf || reg != cases[i].reg ||
		    bit != cases[i].bit)
			fail_msg("'%s' found as %#x.%u reg %d bit %u", cases[i].name, leaf, subleaf,
				 reg, bit);
	}
}

static void test_lookup_unknown(void **state)
{
	uint32_t leaf, subleaf;
	enum cpuid_reg reg;
	uint8_t bit;

	assert_int_equal(cpuid_feature_lookup("sse5", &leaf, &subleaf, &reg, &bit), -ENOENT);
	assert_int_equal(cpuid_feature_lookup("", &leaf, &subleaf, &reg, &bit), -ENOENT);
	assert_int_equal(cpuid_feature_lookup("avx2 ", &leaf, &subleaf, &reg, &bit), -ENOENT);
}

static void test_parse_valid(void **state)
{
	struct cpuid_mask m;

	parse_ok("-cx16,+x2apic", &m);
	assert_int_equal(m.n, 2);
	assert_int_equal(mask_says(&m, "cx16"), 0);
	assert_int_equal(mask_says(&m, "x2apic"), 1);

	/* Spaces around items, a bare name (taken as '+'), aliases. */
	parse_ok(" -sse4.2 , x2apic,-tsc-deadline", &m);
	assert_int_equal(mask_says(&m, "sse4_2"), 0);
	assert_int_equal(mask_says(&m, "x2apic"), 1);
	assert_int_equal(mask_says(&m, "tsc_deadline_timer"), 0);

	/* The last item naming a feature wins. */
	parse_ok("-x2apic,+x2apic", &m);
	assert_int_equal(mask_says(&m, "x2apic"), 1);
	parse_ok("+avx,-avx", &m);
	assert_int_equal(mask_says(&m, "avx"), 0);
	assert_int_equal(mask_says(&m, "avx2"), 0);

	parse_ok("", &m);
	assert_int_equal(m.n, 0);
	parse_ok(NULL, &m);
	assert_int_equal(m.n, 0);
}

static void expect_error(const char *spec, const char *needle1, const char *needle2)
{
	struct cpuid_mask m = { .n = 5 };
	char err[256] = "";

	if (cpuid_mask_parse(spec, &m, err, sizeof(err)) != -EINVAL)
		fail_msg("\"%s\" accepted", spec);
	if (!strstr(err, needle1) || (needle2 && !strstr(err, needle2)))
		fail_msg("\"%s\": message \"%s\" lacks \"%s\"/\"%s\"", spec, err, needle1,
			 needle2 ? needle2 : "");
	assert_int_equal(m.n, 0);
}

static void test_parse_invalid(void **state)
{
	expect_error("-xsave,-avx9", "unknown feature 'avx9'", "item 2");
	expect_error("+sse5", "'sse5'", NULL);
	expect_error("-xsave,,+cx16", "item 2 is empty", NULL);
	expect_error("-cx16,", "item 2 is empty", NULL);
	expect_error(",", "item 1 is empty", NULL);
	expect_error("-", "names no feature", NULL);
	expect_error("-cx16, + ", "item 2", NULL);
	/* A '+' on something a '-' turns off would give the guest AVX2
	 * without AVX. */
	expect_error("-avx,+avx2", "'+avx2' (item 2)", "'-avx' (item 1)");
	expect_error("+avx512bw,-xsave", "'+avx512bw'", "'-xsave'");
}

static void test_parse_too_many(void **state)
{
	static const char *const names[] = {
		"fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr",
		"pge", "mca", "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2",
		"ss", "pni", "pclmulqdq", "monitor", "ssse3", "fma", "cx16", "pcid", "sse4_1",
		"sse4_2", "x2apic", "movbe", "popcnt", "aes", "xsave", "avx", "f16c", "rdrand",
		"fsgsbase", "bmi1", "avx2", "smep", "bmi2", "erms", "invpcid", "avx512f", "rdseed",
		"adx", "smap", "clflushopt", "clwb", "sha_ni", "umip", "pku", "vaes", "gfni",
		"rdpid", "syscall", "nx", "lm", "rdtscp", "pdpe1gb", "lahf_lm",
	};
	char spec[1024] = "";
	struct cpuid_mask m;
	char err[256];

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		strcat(spec, i ? ",+" : "+");
		strcat(spec, names[i]);
	}
	assert_true(sizeof(names) / sizeof(names[0]) > CPUID_MAX_OVERRIDES);
	assert_int_equal(cpuid_mask_parse(spec, &m, err, sizeof(err)), -EINVAL);
	if (!strstr(err, "more than 64"))
		fail_msg("message: %s", err);
}

/* ---- what '-' takes along ------------------------------------------------ */

static void test_closure_xsave(void **state)
{
	static const char *const gone[] = {
		"xsave", "xsaveopt", "xsavec", "xgetbv1", "xsaves", "avx", "avx2", "fma", "f16c",
		"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
		"vaes", "vpclmulqdq", "amx_tile", "amx_int8", "amx_bf16", "pku", "ospke", "osxsave",
	};
	static const char *const kept[] = { "sse2", "sse4_2", "cx16", "aes", "popcnt", "fxsr" };
	struct cpuid_mask m;

	parse_ok("-xsave", &m);
	for (unsigned i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		if (mask_says(&m, gone[i]) != 0)
			fail_msg("-xsave leaves %s", gone[i]);
	for (unsigned i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		if (mask_says(&m, kept[i]) != -1)
			fail_msg("-xsave touches %s", kept[i]);
}

static void test_closure_sse2_and_avx(void **state)
{
	struct cpuid_mask m;

	parse_ok("-sse2", &m);
	assert_int_equal(mask_says(&m, "sse2"), 0);
	assert_int_equal(mask_says(&m, "pni"), 0);
	assert_int_equal(mask_says(&m, "ssse3"), 0);
	assert_int_equal(mask_says(&m, "sse4_1"), 0);
	assert_int_equal(mask_says(&m, "sse4_2"), 0);
	assert_int_equal(mask_says(&m, "avx2"), 0);
	assert_int_equal(mask_says(&m, "aes"), 0);
	assert_int_equal(mask_says(&m, "sse"), -1);     /* not upwards */
	assert_int_equal(mask_says(&m, "xsave"), -1);

	parse_ok("-avx", &m);
	assert_int_equal(mask_says(&m, "avx512f"), 0);
	assert_int_equal(mask_says(&m, "avx512_vbmi2"), 0);
	assert_int_equal(mask_says(&m, "fma"), 0);
	assert_int_equal(mask_says(&m, "vpclmulqdq"), 0);
	assert_int_equal(mask_says(&m, "xsave"), -1);
	assert_int_equal(mask_says(&m, "pclmulqdq"), -1);

	/* The whole SSE family still fits the override limit. */
	parse_ok("-fxsr", &m);
	assert_int_equal(mask_says(&m, "avx512_fp16"), 0);
}

/* ---- per-vCPU tables -------------------------------------------------- */

static unsigned pow2(unsigned n) { unsigned p = 1; while (p < n) p <<= 1; return p; }
static unsigned log2_ceil(unsigned n) { unsigned b = 0; while ((1u << b) < n) b++; return b; }

static void check_kvm_signature(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = must_find(c, 0x40000000, 0);
	char sig[12];

	memcpy(sig, &e->ebx, 4);
	memcpy(sig + 4, &e->ecx, 4);
	memcpy(sig + 8, &e->edx, 4);
	assert_memory_equal(sig, "KVMKVMKVM\0\0\0", 12);
}

static void check_intel_vcpu(struct kvm_cpuid2 *c, unsigned ncpus, uint32_t apic_id)
{
	struct kvm_cpuid_entry2 *e = must_find(c, 1, 0);
	uint32_t leaves[] = { 0xb, 0x1f };

	assert_int_equal(e->ebx >> 24, apic_id);
	assert_int_equal((e->ebx >> 16) & 0xff, pow2(ncpus));
	assert_int_equal(e->ebx & 0xffff, 0x0800);                 /* CLFLUSH size kept */
	assert_int_equal(!!(e->edx & L1_EDX_HTT), ncpus > 1);
	assert_true(e->ecx & L1_ECX_HYPERV);

	for (unsigned i = 0; i < 4; i++) {
		static const uint32_t cache_id[4] = { 0x121, 0x122, 0x143, 0x163 };
		uint32_t eax = must_find(c, 4, i)->eax;
		unsigned level = (eax >> 5) & 7;

		assert_int_equal(eax >> 26, pow2(ncpus) - 1);
		assert_int_equal((eax >> 14) & 0xfff, level == 3 ? pow2(ncpus) - 1 : 0);
		assert_int_equal(eax & 0x3fff, cache_id[i]);
	}
	assert_int_equal(must_find(c, 4, 4)->eax, 0);

	for (unsigned l = 0; l < 2; l++) {
		struct kvm_cpuid_entry2 *smt = must_find(c, leaves[l], 0);
		struct kvm_cpuid_entry2 *core = must_find(c, leaves[l], 1);
		struct kvm_cpuid_entry2 *end = must_find(c, leaves[l], 2);

		assert_int_equal(smt->eax & 0x1f, 0);
		assert_int_equal(smt->ebx & 0xffff, 1);
		assert_int_equal(smt->ecx, 0x100);                  /* SMT, subleaf 0 */
		assert_int_equal(smt->edx, apic_id);
		assert_int_equal(core->eax & 0x1f, log2_ceil(ncpus));
		assert_int_equal(core->ebx & 0xffff, ncpus);
		assert_int_equal(core->ecx, 0x201);                 /* core, subleaf 1 */
		assert_int_equal(core->edx, apic_id);
		assert_int_equal(end->ebx, 0);
		assert_int_equal(end->ecx, 2);                      /* invalid level */
		assert_int_equal(end->edx, apic_id);
		/* All the package's ids fit the core level's shift. */
		assert_true(apic_id >> (core->eax & 0x1f) == 0);
	}
	check_kvm_signature(c);
}

static void run_intel(unsigned ncpus)
{
	struct kvm_cpuid2 *supported = intel_table();

	for (unsigned i = 0; i < ncpus; i++) {
		struct kvm_cpuid2 *c = table_dup(supported);

		cpuid_setup_vcpu(c, NULL, i, ncpus, i);
		check_intel_vcpu(c, ncpus, i);
		/* Features other than the topology bits stay as KVM gave them. */
		assert_int_equal(must_find(c, 7, 0)->ebx, must_find(supported, 7, 0)->ebx);
		assert_int_equal(must_find(c, 0xd, 0)->eax, must_find(supported, 0xd, 0)->eax);
		free(c);
	}
	free(supported);
}

static void test_intel_1_cpu(void **state) { run_intel(1); }
static void test_intel_2_cpus(void **state) { run_intel(2); }
static void test_intel_3_cpus(void **state) { run_intel(3); }
static void test_intel_8_cpus(void **state) { run_intel(8); }

static void run_amd(unsigned ncpus)
{
	struct kvm_cpuid2 *supported = amd_table();

	for (unsigned i = 0; i < ncpus; i++) {
		struct kvm_cpuid2 *c = table_dup(supported);
		uint32_t apic_id = 2 * i;   /* sparse ids reach every leaf */
		struct kvm_cpuid_entry2 *e;

		cpuid_setup_vcpu(c, NULL, i, ncpus, apic_id);
		e = must_find(c, 1, 0);
		assert_int_equal(e->ebx >> 24, apic_id);
		assert_true(e->ecx & L1_ECX_HYPERV);
		assert_int_equal(!!(e->edx & L1_EDX_HTT), ncpus > 1);
		assert_int_equal(!!(must_find(c, 0x80000001, 0)->ecx & 2), ncpus > 1);
		e = must_find(c, 0x80000008, 0);
		assert_int_equal(e->ecx & 0xff, ncpus - 1);
		assert_int_equal((e->ecx >> 12) & 0xf, log2_ceil(ncpus));
		assert_int_equal(e->ecx & ~0xf0ffu, 0x0000707f & ~0xf0ffu);
		e = must_find(c, 0x8000001e, 0);
		assert_int_equal(e->eax, apic_id);
		assert_int_equal(e->ebx & 0xff, apic_id);
		assert_int_equal((e->ebx >> 8) & 0xff, 0);          /* one thread per core */
		for (unsigned s = 0; s < 4; s++) {
			uint32_t eax = must_find(c, 0x8000001d, s)->eax;

			assert_int_equal((eax >> 14) & 0xfff, s == 3 ? pow2(ncpus) - 1 : 0);
		}
		/* KVM listed no core level: leaf 0xB claims no topology
		 * instead of one package per vCPU, and still gives the id. */
		e = must_find(c, 0xb, 0);
		assert_int_equal(e->ebx, 0);
		assert_int_equal(e->edx, apic_id);
		check_kvm_signature(c);
		free(c);
	}
	free(supported);
}

static void test_amd_1_cpu(void **state) { run_amd(1); }
static void test_amd_3_cpus(void **state) { run_amd(3); }
static void test_amd_8_cpus(void **state) { run_amd(8); }

static void test_mask_minus_xsave(void **state)
{
	struct kvm_cpuid2 *c = intel_table();
	struct cpuid_mask m;

	parse_ok("-xsave", &m);
	cpuid_setup_vcpu(c, &m, 0, 2, 0);
	assert_false(must_find(c, 1, 0)->ecx & (L1_ECX_XSAVE | L1_ECX_OSXSAVE | L1_ECX_AVX));
	assert_true(must_find(c, 1, 0)->ecx & L1_ECX_HYPERV);
	assert_false(must_find(c, 7, 0)->ebx & (L7_EBX_AVX2 | L7_EBX_AVX512F));
	assert_false(must_find(c, 7, 0)->ecx & (L7_ECX_PKU | L7_ECX_OSPKE | L7_ECX_VAES));
	assert_false(must_find(c, 7, 0)->edx & (L7_EDX_AMX_TILE | L7_EDX_AMX_INT8));
	assert_false(must_find(c, 7, 1)->eax & L71_EAX_AVXVNNI);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 0xd && (e->eax | e->ebx | e->ecx | e->edx))
			fail_msg("leaf 0xd.%u not cleared", e->index);
	}
	/* SSE and friends untouched. */
	assert_true(must_find(c, 1, 0)->ecx & L1_ECX_SSE41);
	free(c);
}

static void test_mask_minus_avx512_resizes_xsave(void **state)
{
	struct kvm_cpuid2 *c = intel_table();
	struct cpuid_mask m;
	struct kvm_cpuid_entry2 *d0;

	parse_ok("-avx512f,-amx-tile", &m);
	cpuid_setup_vcpu(c, &m, 0, 1, 0);
	d0 = must_find(c, 0xd, 0);
	/* x87, SSE, AVX and PKRU remain; opmask/ZMM and AMX tiles go. */
	assert_int_equal(d0->eax, 0x207);
	assert_int_equal(d0->ecx, 2688 + 8);            /* ends with PKRU */
	assert_int_equal(must_find(c, 0xd, 6)->eax, 0);
	assert_int_equal(must_find(c, 0xd, 18)->eax, 0);
	assert_int_equal(must_find(c, 0xd, 2)->eax, 256);
	assert_true(must_find(c, 7, 0)->ebx & L7_EBX_AVX2);
	assert_false(must_find(c, 7, 0)->ebx & L7_EBX_AVX512BW);
	assert_true(must_find(c, 1, 0)->ecx & L1_ECX_XSAVE);
	free(c);

	c = intel_table();
	parse_ok("-xsaves", &m);
	cpuid_setup_vcpu(c, &m, 0, 1, 0);
	assert_false(must_find(c, 0xd, 1)->eax & LD1_EAX_XSAVES);
	assert_true(must_find(c, 0xd, 1)->eax & LD1_EAX_XSAVEOPT);
	assert_int_equal(must_find(c, 0xd, 1)->ecx, 0);             /* no XSS state */
	assert_false(must_find(c, 7, 0)->edx & L7_EDX_AMX_TILE);    /* needs XFD */
	free(c);
}

static void test_mask_plus_cannot_invent(void **state)
{
	struct kvm_cpuid2 *c = amd_table();
	struct cpuid_mask m;

	/* The AMD table has no AVX-512 and no HTT-less single CPU; '+' keeps
	 * off what KVM has off, and keeps bits this module sets itself. */
	must_find(c, 1, 0)->ecx &= ~L1_ECX_X2APIC;
	parse_ok("+avx512f,+x2apic,+hypervisor,-cx16,-popcnt", &m);
	cpuid_setup_vcpu(c, &m, 0, 1, 0);
	assert_false(must_find(c, 7, 0)->ebx & L7_EBX_AVX512F);
	assert_false(must_find(c, 1, 0)->ecx & L1_ECX_X2APIC);
	assert_true(must_find(c, 1, 0)->ecx & L1_ECX_HYPERV);
	assert_false(must_find(c, 1, 0)->ecx & (L1_ECX_CX16 | L1_ECX_POPCNT));
	assert_true(must_find(c, 1, 0)->ecx & L1_ECX_SSSE3);
	free(c);

	/* '+ht' restores HTT for one vCPU only where KVM offers it. */
	c = intel_table();
	must_find(c, 1, 0)->edx |= L1_EDX_HTT;
	parse_ok("+ht", &m);
	cpuid_setup_vcpu(c, &m, 0, 1, 0);
	assert_true(must_find(c, 1, 0)->edx & L1_EDX_HTT);
	free(c);

	/* '-hypervisor' is the operator's to ask for. */
	c = intel_table();
	parse_ok("-hypervisor", &m);
	cpuid_setup_vcpu(c, &m, 0, 1, 0);
	assert_false(must_find(c, 1, 0)->ecx & L1_ECX_HYPERV);
	free(c);
}

static void test_find(void **state)
{
	struct kvm_cpuid2 *c = intel_table();

	assert_int_equal(must_find(c, 4, 2)->index, 2);
	assert_null(cpuid_find(c, 4, 9));
	assert_null(cpuid_find(c, 0x80000020, 0));
	/* Leaves without a significant index answer any subleaf. */
	assert_int_equal(must_find(c, 1, 5)->function, 1);
	free(c);
}

/* ---- the real KVM ----------------------------------------------------- */

static uint32_t reg_value(const struct kvm_cpuid_entry2 *e, enum cpuid_reg reg)
{
	switch (reg) {
	case CPUID_EAX: return e->eax;
	case CPUID_EBX: return e->ebx;
	case CPUID_ECX: return e->ecx;
	case CPUID_EDX: break;
	}
	return e->edx;
}

static struct kvm_cpuid2 *kvm_supported(int kvm)
{
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = table_new(n);

		c->nent = n;
		if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG)
			fail_msg("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
	}
	fail_msg("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
	return NULL;
}

/* KVM takes the table for a vCPU and gives back the feature bits as set.
 * PVM (the nested KVM of the project's build machines) answers
 * KVM_GET_CPUID2 with the host's features whatever was set, so there only
 * the acceptance is checked. */
static void kvm_accepts(int kvm, struct kvm_cpuid2 *c)
{
	static const struct { uint32_t fn; enum cpuid_reg reg; uint32_t bits; } kept[] = {
		{ 1, CPUID_ECX, L1_ECX_XSAVE | L1_ECX_AVX | L1_ECX_HYPERV | L1_ECX_CX16 },
		{ 1, CPUID_EDX, L1_EDX_HTT | L1_EDX_SSE2 },
		{ 7, CPUID_EBX, L7_EBX_AVX2 | L7_EBX_AVX512F },
	};
	bool pvm = access("/sys/module/kvm_pvm", F_OK) == 0;
	int vm, vcpu;
	struct kvm_cpuid2 *back = table_new(c->nent);

	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm >= 0);
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	assert_true(vcpu >= 0);
	if (ioctl(vcpu, KVM_SET_CPUID2, c) != 0)
		fail_msg("KVM_SET_CPUID2 refused the table: %s", strerror(errno));
	back->nent = c->nent;
	assert_int_equal(ioctl(vcpu, KVM_GET_CPUID2, back), 0);
	assert_int_equal(back->nent, c->nent);
	for (unsigned i = 0; i < sizeof(kept) / sizeof(kept[0]) && !pvm; i++) {
		struct kvm_cpuid_entry2 *set = must_find(c, kept[i].fn, 0);
		struct kvm_cpuid_entry2 *got = must_find(back, kept[i].fn, 0);
		uint32_t want = reg_value(set, kept[i].reg) & kept[i].bits;
		uint32_t have = reg_value(got, kept[i].reg) & kept[i].bits;

		if (want != have)
			fail_msg("leaf %#x reg %d: set %#x, KVM has %#x", kept[i].fn, kept[i].reg,
				 want, have);
	}
	free(back);
	close(vcpu);
	close(vm);
}

static void test_real_kvm(void **state)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	struct kvm_cpuid2 *supported, *c;
	struct kvm_cpuid_entry2 *e;
	struct cpuid_mask m;

	if (kvm < 0) {
		fprintf(stderr, "test_real_kvm: /dev/kvm: %s: skipped\n", strerror(errno));
		skip();
	}
	supported = kvm_supported(kvm);

	c = table_dup(supported);
	cpuid_setup_vcpu(c, NULL, 1, 2, 1);
	e = must_find(c, 1, 0);
	assert_true(e->ecx & L1_ECX_HYPERV);
	assert_true(e->edx & L1_EDX_HTT);
	assert_int_equal(e->ebx >> 24, 1);
	assert_int_equal(e->ecx & L1_ECX_XSAVE, must_find(supported, 1, 0)->ecx & L1_ECX_XSAVE);
	assert_true(e->edx & (L1_EDX_SSE | L1_EDX_SSE2));
	check_kvm_signature(c);
	kvm_accepts(kvm, c);
	free(c);

	c = table_dup(supported);
	parse_ok("-xsave", &m);
	cpuid_setup_vcpu(c, &m, 0, 2, 0);
	e = must_find(c, 1, 0);
	assert_true(e->ecx & L1_ECX_HYPERV);
	assert_false(e->ecx & (L1_ECX_XSAVE | L1_ECX_OSXSAVE | L1_ECX_AVX));
	assert_false(must_find(c, 7, 0)->ebx & (L7_EBX_AVX2 | L7_EBX_AVX512F));
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == 0xd)
			assert_int_equal(c->entries[i].eax | c->entries[i].ebx |
					 c->entries[i].ecx | c->entries[i].edx, 0);
	/* What -xsave does not name stays. */
	assert_int_equal(e->ecx & (L1_ECX_SSE3 | L1_ECX_SSE41),
			 must_find(supported, 1, 0)->ecx & (L1_ECX_SSE3 | L1_ECX_SSE41));
	check_kvm_signature(c);
	kvm_accepts(kvm, c);
	free(c);

	free(supported);
	close(kvm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_lookup_unknown),
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_invalid),
		cmocka_unit_test(test_parse_too_many),
		cmocka_unit_test(test_closure_xsave),
		cmocka_unit_test(test_closure_sse2_and_avx),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_intel_1_cpu),
		cmocka_unit_test(test_intel_2_cpus),
		cmocka_unit_test(test_intel_3_cpus),
		cmocka_unit_test(test_intel_8_cpus),
		cmocka_unit_test(test_amd_1_cpu),
		cmocka_unit_test(test_amd_3_cpus),
		cmocka_unit_test(test_amd_8_cpus),
		cmocka_unit_test(test_mask_minus_xsave),
		cmocka_unit_test(test_mask_minus_avx512_resizes_xsave),
		cmocka_unit_test(test_mask_plus_cannot_invent),
		cmocka_unit_test(test_real_kvm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
