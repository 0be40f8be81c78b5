/* CPUID of each vCPU: KVM's supported table, then the topology (one socket,
 * ncpus cores of one thread), the hypervisor bit, and last the operator's
 * feature mask.
 *
 * Invariants:
 *  (1) A mask never turns on a bit that KVM_GET_SUPPORTED_CPUID has off:
 *      '+feature' only keeps (or restores) what KVM offers.
 *  (2) Turning a feature off turns off everything that needs it
 *      (feature_deps), and the XSAVE leaf 0xD stops describing state
 *      components whose feature is gone, so a guest never sizes or enables
 *      state for a feature it was told is absent.
 *  (3) Nothing is added to the table: topology subleaves that KVM did not
 *      list stay absent, and the leaf then reports no topology rather than
 *      a wrong one. */
#include "cpuid.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

struct cpuid_feature {
	const char *name;     /* as /proc/cpuinfo spells it (or QEMU, if Linux hides it) */
	uint32_t leaf;
	uint8_t subleaf;
	uint8_t reg;          /* enum cpuid_reg */
	uint8_t bit;
};

#define L1_ECX(n, b)   { n, 0x1, 0, CPUID_ECX, b }
#define L1_EDX(n, b)   { n, 0x1, 0, CPUID_EDX, b }
#define L7_EBX(n, b)   { n, 0x7, 0, CPUID_EBX, b }
#define L7_ECX(n, b)   { n, 0x7, 0, CPUID_ECX, b }
#define L7_EDX(n, b)   { n, 0x7, 0, CPUID_EDX, b }
#define L7_1_EAX(n, b) { n, 0x7, 1, CPUID_EAX, b }
#define LD_1_EAX(n, b) { n, 0xd, 1, CPUID_EAX, b }
#define X1_ECX(n, b)   { n, 0x80000001, 0, CPUID_ECX, b }
#define X1_EDX(n, b)   { n, 0x80000001, 0, CPUID_EDX, b }
#define X7_EDX(n, b)   { n, 0x80000007, 0, CPUID_EDX, b }
#define X8_EBX(n, b)   { n, 0x80000008, 0, CPUID_EBX, b }

static const struct cpuid_feature features[] = {
	L1_EDX("fpu", 0), L1_EDX("vme", 1), L1_EDX("de", 2), L1_EDX("pse", 3),
	L1_EDX("tsc", 4), L1_EDX("msr", 5), L1_EDX("pae", 6), L1_EDX("mce", 7),
	L1_EDX("cx8", 8), L1_EDX("apic", 9), L1_EDX("sep", 11), L1_EDX("mtrr", 12),
	L1_EDX("pge", 13), L1_EDX("mca", 14), L1_EDX("cmov", 15), L1_EDX("pat", 16),
	L1_EDX("pse36", 17), L1_EDX("pn", 18), L1_EDX("clflush", 19), L1_EDX("dts", 21),
	L1_EDX("acpi", 22), L1_EDX("mmx", 23), L1_EDX("fxsr", 24), L1_EDX("sse", 25),
	L1_EDX("sse2", 26), L1_EDX("ss", 27), L1_EDX("ht", 28), L1_EDX("tm", 29),
	L1_EDX("ia64", 30), L1_EDX("pbe", 31),

	L1_ECX("pni", 0), L1_ECX("pclmulqdq", 1), L1_ECX("dtes64", 2), L1_ECX("monitor", 3),
	L1_ECX("ds_cpl", 4), L1_ECX("vmx", 5), L1_ECX("smx", 6), L1_ECX("est", 7),
	L1_ECX("tm2", 8), L1_ECX("ssse3", 9), L1_ECX("cid", 10), L1_ECX("sdbg", 11),
	L1_ECX("fma", 12), L1_ECX("cx16", 13), L1_ECX("xtpr", 14), L1_ECX("pdcm", 15),
	L1_ECX("pcid", 17), L1_ECX("dca", 18), L1_ECX("sse4_1", 19), L1_ECX("sse4_2", 20),
	L1_ECX("x2apic", 21), L1_ECX("movbe", 22), L1_ECX("popcnt", 23),
	L1_ECX("tsc_deadline_timer", 24), L1_ECX("aes", 25), L1_ECX("xsave", 26),
	L1_ECX("osxsave", 27), L1_ECX("avx", 28), L1_ECX("f16c", 29), L1_ECX("rdrand", 30),
	L1_ECX("hypervisor", 31),

	L7_EBX("fsgsbase", 0), L7_EBX("tsc_adjust", 1), L7_EBX("sgx", 2), L7_EBX("bmi1", 3),
	L7_EBX("hle", 4), L7_EBX("avx2", 5), L7_EBX("fdp_excptn_only", 6), L7_EBX("smep", 7),
	L7_EBX("bmi2", 8), L7_EBX("erms", 9), L7_EBX("invpcid", 10), L7_EBX("rtm", 11),
	L7_EBX("cqm", 12), L7_EBX("mpx", 14), L7_EBX("rdt_a", 15), L7_EBX("avx512f", 16),
	L7_EBX("avx512dq", 17), L7_EBX("rdseed", 18), L7_EBX("adx", 19), L7_EBX("smap", 20),
	L7_EBX("avx512ifma", 21), L7_EBX("clflushopt", 23), L7_EBX("clwb", 24),
	L7_EBX("intel_pt", 25), L7_EBX("avx512pf", 26), L7_EBX("avx512er", 27),
	L7_EBX("avx512cd", 28), L7_EBX("sha_ni", 29), L7_EBX("avx512bw", 30),
	L7_EBX("avx512vl", 31),

	L7_ECX("prefetchwt1", 0), L7_ECX("avx512vbmi", 1), L7_ECX("umip", 2), L7_ECX("pku", 3),
	L7_ECX("ospke", 4), L7_ECX("waitpkg", 5), L7_ECX("avx512_vbmi2", 6),
	L7_ECX("shstk", 7), L7_ECX("gfni", 8), L7_ECX("vaes", 9), L7_ECX("vpclmulqdq", 10),
	L7_ECX("avx512_vnni", 11), L7_ECX("avx512_bitalg", 12), L7_ECX("tme", 13),
	L7_ECX("avx512_vpopcntdq", 14), L7_ECX("la57", 16), L7_ECX("rdpid", 22),
	L7_ECX("bus_lock_detect", 24), L7_ECX("cldemote", 25), L7_ECX("movdiri", 27),
	L7_ECX("movdir64b", 28), L7_ECX("enqcmd", 29), L7_ECX("sgx_lc", 30), L7_ECX("pks", 31),

	L7_EDX("avx512_4vnniw", 2), L7_EDX("avx512_4fmaps", 3), L7_EDX("fsrm", 4),
	L7_EDX("avx512_vp2intersect", 8), L7_EDX("md_clear", 10), L7_EDX("serialize", 14),
	L7_EDX("hybrid_cpu", 15), L7_EDX("tsxldtrk", 16), L7_EDX("pconfig", 18),
	L7_EDX("arch_lbr", 19), L7_EDX("ibt", 20), L7_EDX("amx_bf16", 22),
	L7_EDX("avx512_fp16", 23), L7_EDX("amx_tile", 24), L7_EDX("amx_int8", 25),
	L7_EDX("spec_ctrl", 26), L7_EDX("stibp", 27), L7_EDX("flush_l1d", 28),
	L7_EDX("arch_capabilities", 29), L7_EDX("core_capability", 30), L7_EDX("ssbd", 31),

	L7_1_EAX("sha512", 0), L7_1_EAX("sm3", 1), L7_1_EAX("sm4", 2),
	L7_1_EAX("avx_vnni", 4), L7_1_EAX("avx512_bf16", 5), L7_1_EAX("cmpccxadd", 7),
	L7_1_EAX("fzrm", 10), L7_1_EAX("fsrs", 11), L7_1_EAX("fsrc", 12), L7_1_EAX("lkgs", 18),
	L7_1_EAX("amx_fp16", 21), L7_1_EAX("avx_ifma", 23), L7_1_EAX("lam", 26),

	LD_1_EAX("xsaveopt", 0), LD_1_EAX("xsavec", 1), LD_1_EAX("xgetbv1", 2),
	LD_1_EAX("xsaves", 3), LD_1_EAX("xfd", 4),

	X1_EDX("syscall", 11), X1_EDX("mp", 19), X1_EDX("nx", 20), X1_EDX("mmxext", 22),
	X1_EDX("fxsr_opt", 25), X1_EDX("pdpe1gb", 26), X1_EDX("rdtscp", 27), X1_EDX("lm", 29),
	X1_EDX("3dnowext", 30), X1_EDX("3dnow", 31),

	X1_ECX("lahf_lm", 0), X1_ECX("cmp_legacy", 1), X1_ECX("svm", 2), X1_ECX("extapic", 3),
	X1_ECX("cr8_legacy", 4), X1_ECX("abm", 5), X1_ECX("sse4a", 6), X1_ECX("misalignsse", 7),
	X1_ECX("3dnowprefetch", 8), X1_ECX("osvw", 9), X1_ECX("ibs", 10), X1_ECX("xop", 11),
	X1_ECX("skinit", 12), X1_ECX("wdt", 13), X1_ECX("lwp", 15), X1_ECX("fma4", 16),
	X1_ECX("tce", 17), X1_ECX("nodeid_msr", 19), X1_ECX("tbm", 21), X1_ECX("topoext", 22),
	X1_ECX("perfctr_core", 23), X1_ECX("perfctr_nb", 24), X1_ECX("bpext", 26),
	X1_ECX("ptsc", 27), X1_ECX("perfctr_llc", 28), X1_ECX("mwaitx", 29),

	X7_EDX("invtsc", 8),

	X8_EBX("clzero", 0), X8_EBX("irperf", 1), X8_EBX("xsaveerptr", 2), X8_EBX("rdpru", 4),
	X8_EBX("wbnoinvd", 9), X8_EBX("amd_ibpb", 12), X8_EBX("amd_ibrs", 14),
	X8_EBX("amd_stibp", 15), X8_EBX("amd_ppin", 23), X8_EBX("amd_ssbd", 24),
	X8_EBX("virt_ssbd", 25), X8_EBX("amd_ssb_no", 26), X8_EBX("cppc", 27),
};

/* Other spellings (after '-', '.' -> '_' and lower-casing), mostly QEMU's. */
static const struct { const char *alias, *name; } feature_aliases[] = {
	{ "sse3", "pni" },
	{ "pclmuldq", "pclmulqdq" },
	{ "tsc_deadline", "tsc_deadline_timer" },
	{ "lzcnt", "abm" },
	{ "xd", "nx" },
	{ "i64", "lm" },
	{ "ffxsr", "fxsr_opt" },
	{ "cr8legacy", "cr8_legacy" },
	{ "sha", "sha_ni" },
	{ "avx512vbmi2", "avx512_vbmi2" },
	{ "avx512vnni", "avx512_vnni" },
	{ "avx512bitalg", "avx512_bitalg" },
	{ "tsx_ldtrk", "tsxldtrk" },
	{ "ibpb", "amd_ibpb" },
	{ "ibrs", "amd_ibrs" },
	{ "amd_no_ssb", "amd_ssb_no" },
	{ "core_capabilities", "core_capability" },
};

/* Turning off `needs` turns off `by`: its instructions use the registers,
 * state or mechanism `needs` provides. Closed transitively. */
static const struct { const char *needs, *by; } feature_deps[] = {
	{ "tsc", "rdtscp" }, { "tsc", "tsc_deadline_timer" }, { "tsc", "invtsc" },
	{ "tsc", "tsc_adjust" },
	{ "apic", "x2apic" }, { "apic", "tsc_deadline_timer" },
	{ "pae", "lm" }, { "pae", "nx" }, { "pae", "pdpe1gb" },
	{ "pse", "pse36" },
	{ "mmx", "mmxext" }, { "mmx", "3dnow" }, { "3dnow", "3dnowext" },
	{ "fxsr", "sse" }, { "fxsr", "fxsr_opt" },
	{ "sse", "sse2" },
	{ "sse2", "pni" }, { "sse2", "aes" }, { "sse2", "pclmulqdq" }, { "sse2", "sha_ni" },
	{ "sse2", "gfni" }, { "sse2", "sse4a" }, { "sse2", "misalignsse" }, { "sse2", "avx" },
	{ "pni", "ssse3" }, { "ssse3", "sse4_1" }, { "sse4_1", "sse4_2" },
	{ "xsave", "osxsave" }, { "xsave", "xsaveopt" }, { "xsave", "xsavec" },
	{ "xsave", "xgetbv1" }, { "xsave", "xsaves" }, { "xsave", "avx" }, { "xsave", "mpx" },
	{ "xsave", "pku" }, { "xsave", "amx_tile" },
	{ "xsaves", "xfd" }, { "xgetbv1", "xfd" }, { "xfd", "amx_tile" },
	{ "avx", "avx2" }, { "avx", "fma" }, { "avx", "f16c" }, { "avx", "fma4" },
	{ "avx", "xop" }, { "avx", "vaes" }, { "avx", "vpclmulqdq" }, { "avx", "avx512f" },
	{ "avx", "sha512" }, { "avx", "sm3" }, { "avx", "sm4" },
	{ "avx2", "avx512f" }, { "avx2", "avx_vnni" }, { "avx2", "avx_ifma" },
	{ "avx512f", "avx512dq" }, { "avx512f", "avx512ifma" }, { "avx512f", "avx512pf" },
	{ "avx512f", "avx512er" }, { "avx512f", "avx512cd" }, { "avx512f", "avx512bw" },
	{ "avx512f", "avx512vl" }, { "avx512f", "avx512_vnni" },
	{ "avx512f", "avx512_vpopcntdq" }, { "avx512f", "avx512_4vnniw" },
	{ "avx512f", "avx512_4fmaps" }, { "avx512f", "avx512_vp2intersect" },
	{ "avx512bw", "avx512vbmi" }, { "avx512bw", "avx512_vbmi2" },
	{ "avx512bw", "avx512_bitalg" }, { "avx512bw", "avx512_bf16" },
	{ "avx512bw", "avx512_fp16" },
	{ "amx_tile", "amx_bf16" }, { "amx_tile", "amx_int8" }, { "amx_tile", "amx_fp16" },
	{ "pku", "ospke" },
	{ "sgx", "sgx_lc" },
};

#define NFEATURES ARRAY_SIZE(features)

/* XSAVE state components (XCR0 bits) that exist only with a feature. */
static const struct { const char *feature; uint32_t xcr0; } xsave_components[] = {
	{ "avx", 1u << 2 },                                   /* YMM upper halves */
	{ "mpx", (1u << 3) | (1u << 4) },                     /* BNDREGS, BNDCSR */
	{ "avx512f", (1u << 5) | (1u << 6) | (1u << 7) },     /* opmask, ZMM_Hi256, Hi16_ZMM */
	{ "pku", 1u << 9 },                                   /* PKRU */
	{ "amx_tile", (1u << 17) | (1u << 18) },              /* XTILECFG, XTILEDATA */
};

#define XSAVE_LEGACY_AND_HEADER 576   /* FXSAVE image + XSAVE header */

#define LEAF1_ECX_OSXSAVE    (1u << 27)
#define LEAF1_ECX_XSAVE      (1u << 26)
#define LEAF1_ECX_HYPERVISOR (1u << 31)
#define LEAF1_EDX_HTT        (1u << 28)
#define EXT1_ECX_CMP_LEGACY  (1u << 1)
#define LEAFD1_EAX_XSAVES    (1u << 3)

#define TOPO_LEVEL_SMT  1
#define TOPO_LEVEL_CORE 2

/* ---- feature names ---------------------------------------------------- */

/* Lower case, with '-' and '.' read as '_'. 0 or -ENAMETOOLONG. */
static int normalize(const char *in, size_t len, char *out, size_t outlen)
{
	if (len >= outlen)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < len; i++) {
		char c = (char)tolower((unsigned char)in[i]);

		out[i] = c == '-' || c == '.' ? '_' : c;
	}
	out[len] = '\0';
	return 0;
}

static int feature_index(const char *norm)
{
	for (unsigned i = 0; i < ARRAY_SIZE(feature_aliases); i++) {
		if (!strcmp(norm, feature_aliases[i].alias)) {
			norm = feature_aliases[i].name;
			break;
		}
	}
	for (unsigned i = 0; i < NFEATURES; i++)
		if (!strcmp(norm, features[i].name))
			return (int)i;
	return -ENOENT;
}

int cpuid_feature_lookup(const char *name, uint32_t *leaf, uint32_t *subleaf,
			 enum cpuid_reg *reg, uint8_t *bit)
{
	char norm[64];
	int i;

	if (!name || normalize(name, strlen(name), norm, sizeof(norm)) < 0)
		return -ENOENT;
	i = feature_index(norm);
	if (i < 0)
		return i;
	*leaf = features[i].leaf;
	*subleaf = features[i].subleaf;
	*reg = features[i].reg;
	*bit = features[i].bit;
	return 0;
}

/* Marks in off[] every feature that turning off `root` takes along,
 * `root` included. */
static void dependants_closure(int root, bool off[NFEATURES])
{
	bool grew = true;

	off[root] = true;
	while (grew) {
		grew = false;
		for (unsigned i = 0; i < ARRAY_SIZE(feature_deps); i++) {
			int needs = feature_index(feature_deps[i].needs);
			int by = feature_index(feature_deps[i].by);

			if (needs >= 0 && by >= 0 && off[needs] && !off[by]) {
				off[by] = true;
				grew = true;
			}
		}
	}
}

/* ---- mask parsing ----------------------------------------------------- */

enum item_sign { SIGN_NONE, SIGN_ON, SIGN_OFF };

/* Per feature: what the operator asked for explicitly (the last item
 * naming it wins) and at which item. */
struct parse_state {
	enum item_sign want[NFEATURES];
	unsigned item[NFEATURES];
	char *err;
	size_t errlen;
};

static int parse_error(struct parse_state *ps, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int parse_error(struct parse_state *ps, const char *fmt, ...)
{
	va_list ap;

	if (ps->err && ps->errlen) {
		va_start(ap, fmt);
		vsnprintf(ps->err, ps->errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int parse_item(struct parse_state *ps, const char *item, size_t len, unsigned n)
{
	enum item_sign sign = SIGN_ON;   /* a bare name means '+', as in QEMU's -cpu */
	const char *name = item;
	char norm[64];
	int idx;

	while (len && isspace((unsigned char)*name)) {
		name++;
		len--;
	}
	while (len && isspace((unsigned char)name[len - 1]))
		len--;
	if (len == 0)
		return parse_error(ps, "cpu features: item %u is empty", n);
	if (*name == '+' || *name == '-') {
		sign = *name == '+' ? SIGN_ON : SIGN_OFF;
		name++;
		len--;
	}
	if (len == 0)
		return parse_error(ps, "cpu features: item %u ('%c') names no feature",
				   n, sign == SIGN_OFF ? '-' : '+');
	if (normalize(name, len, norm, sizeof(norm)) < 0 || (idx = feature_index(norm)) < 0)
		return parse_error(ps, "cpu features: unknown feature '%.*s' (item %u)",
				   (int)len, name, n);
	ps->want[idx] = sign;
	ps->item[idx] = n;
	return 0;
}

static int mask_add(struct parse_state *ps, struct cpuid_mask *m, int idx, bool enable)
{
	const struct cpuid_feature *f = &features[idx];

	if (m->n == CPUID_MAX_OVERRIDES)
		return parse_error(ps, "cpu features: more than %u features, counting what "
				   "each '-' takes along", CPUID_MAX_OVERRIDES);
	m->o[m->n++] = (struct cpuid_override){
		.leaf = f->leaf, .subleaf = f->subleaf, .reg = (enum cpuid_reg)f->reg,
		.bit = f->bit, .enable = enable,
	};
	return 0;
}

/* Expands each '-' into its dependants, refusing a '+' on something another
 * item turns off: the guest would get a feature without what it needs. */
static int mask_fill(struct parse_state *ps, struct cpuid_mask *m)
{
	bool off[NFEATURES] = { false };
	int ret;

	for (unsigned i = 0; i < NFEATURES; i++) {
		bool closure[NFEATURES] = { false };

		if (ps->want[i] != SIGN_OFF)
			continue;
		dependants_closure((int)i, closure);
		for (unsigned j = 0; j < NFEATURES; j++) {
			if (!closure[j])
				continue;
			if (ps->want[j] == SIGN_ON)
				return parse_error(ps, "cpu features: '+%s' (item %u) conflicts "
						   "with '-%s' (item %u), which turns %s off",
						   features[j].name, ps->item[j],
						   features[i].name, ps->item[i], features[j].name);
			off[j] = true;
		}
	}
	for (unsigned i = 0; i < NFEATURES; i++) {
		if (off[i] || ps->want[i] == SIGN_ON) {
			ret = mask_add(ps, m, (int)i, !off[i]);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

int cpuid_mask_parse(const char *spec, struct cpuid_mask *m, char *err, size_t errlen)
{
	struct parse_state ps = { .err = err, .errlen = errlen };
	const char *item;
	unsigned n = 1;
	int ret;

	m->n = 0;
	if (err && errlen)
		err[0] = '\0';
	if (!spec || !*spec)
		return 0;
	for (item = spec;; n++) {
		const char *comma = strchr(item, ',');
		size_t len = comma ? (size_t)(comma - item) : strlen(item);

		ret = parse_item(&ps, item, len, n);
		if (ret < 0)
			return ret;
		if (!comma)
			break;
		item = comma + 1;
	}
	ret = mask_fill(&ps, m);
	if (ret < 0)
		m->n = 0;
	return ret;
}

/* ---- the table -------------------------------------------------------- */

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *cpuid, uint32_t function, uint32_t index)
{
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		if (e->function != function)
			continue;
		if (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index)
			return e;
	}
	return NULL;
}

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, enum cpuid_reg reg)
{
	switch (reg) {
	case CPUID_EAX: return &e->eax;
	case CPUID_EBX: return &e->ebx;
	case CPUID_ECX: return &e->ecx;
	case CPUID_EDX: break;
	}
	return &e->edx;
}

static bool feature_on(struct kvm_cpuid2 *c, const char *name)
{
	const struct cpuid_feature *f = &features[feature_index(name)];
	struct kvm_cpuid_entry2 *e = cpuid_find(c, f->leaf, f->subleaf);

	return e && (*reg_of(e, f->reg) >> f->bit & 1);
}

static unsigned pow2_ceil(unsigned n)
{
	unsigned p = 1;

	while (p < n)
		p <<= 1;
	return p;
}

/* Bits an APIC id needs to number n processors. */
static unsigned id_bits(unsigned n)
{
	unsigned bits = 0;

	while ((1u << bits) < n)
		bits++;
	return bits;
}

static unsigned min_u(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

static bool vendor_is_amd(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, 0, 0);
	char vendor[13];

	if (!e)
		return false;
	memcpy(vendor, &e->ebx, 4);
	memcpy(vendor + 4, &e->edx, 4);
	memcpy(vendor + 8, &e->ecx, 4);
	vendor[12] = '\0';
	return !strcmp(vendor, "AuthenticAMD") || !strcmp(vendor, "HygonGenuine");
}

static void set_leaf1(struct kvm_cpuid2 *c, unsigned ncpus, uint32_t apic_id)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, 1, 0);
	/* 8 bits: 256 does not fit, and 255 still rounds up to the same
	 * 8-bit APIC id field an OS derives from it. */
	unsigned logical = min_u(pow2_ceil(ncpus), 255);

	if (!e)
		return;
	e->ebx = (e->ebx & 0x0000ffff) | logical << 16 | (apic_id & 0xff) << 24;
	if (ncpus > 1)
		e->edx |= LEAF1_EDX_HTT;
	else
		e->edx &= ~LEAF1_EDX_HTT;
	e->ecx |= LEAF1_ECX_HYPERVISOR;
}

/* Leaves 4 (Intel) and 0x8000001D (AMD) describe caches alike in
 * EAX[25:14]: L1 and L2 belong to one core (one thread), L3 to the whole
 * package. Leaf 4 also counts the package's cores in EAX[31:26]. */
static void set_cache_leaf(struct kvm_cpuid2 *c, uint32_t leaf, unsigned ncpus)
{
	unsigned package = pow2_ceil(ncpus);

	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		unsigned level = (e->eax >> 5) & 7, sharing;

		if (e->function != leaf || (e->eax & 0x1f) == 0)
			continue;
		sharing = level >= 3 ? min_u(package, 4096) : 1;
		e->eax = (e->eax & 0x00003fff) | (sharing - 1) << 14;
		if (leaf == 4)
			e->eax |= (min_u(package, 64) - 1) << 26;
	}
}

void cpuid_add_topology_subleaves(struct kvm_cpuid2 *c)
{
	static const uint32_t leaves[] = { 0xb, 0x1f };

	for (unsigned i = 0; i < 2; i++) {
		struct kvm_cpuid_entry2 *e = cpuid_find(c, leaves[i], 0), *core;

		if (!e || e->index != 0)
			continue;
		core = cpuid_find(c, leaves[i], 1);
		if (core && core->index == 1)
			continue;
		c->entries[c->nent++] = (struct kvm_cpuid_entry2){
			.function = leaves[i], .index = 1,
			.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
		};
	}
}

/* Leaves 0xB and 0x1F: an SMT level of one thread, then a core level of
 * ncpus; every subleaf gives the x2APIC id in EDX. */
static void set_ext_topology(struct kvm_cpuid2 *c, uint32_t leaf, unsigned ncpus, uint32_t apic_id)
{
	struct kvm_cpuid_entry2 *core = cpuid_find(c, leaf, 1);
	bool has_core_level = core && core->index == 1;

	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function != leaf)
			continue;
		e->eax = 0;
		e->ebx = 0;
		e->ecx = e->index & 0xff;
		e->edx = apic_id;
		/* A lone SMT level would tell the OS that each CPU is a
		 * package of its own; EBX = 0 means "no topology here", and
		 * the OS falls back to leaves 1 and 4. */
		if (!has_core_level)
			continue;
		if (e->index == 0) {
			e->ebx = 1;
			e->ecx |= TOPO_LEVEL_SMT << 8;
		} else if (e->index == 1) {
			e->eax = id_bits(ncpus);
			e->ebx = ncpus;
			e->ecx |= TOPO_LEVEL_CORE << 8;
		}
	}
}

static void set_amd_topology(struct kvm_cpuid2 *c, unsigned ncpus, uint32_t apic_id)
{
	struct kvm_cpuid_entry2 *e;

	e = cpuid_find(c, 0x80000001, 0);
	if (e) {
		/* HTT's logical processor count means cores, not threads. */
		if (ncpus > 1)
			e->ecx |= EXT1_ECX_CMP_LEGACY;
		else
			e->ecx &= ~EXT1_ECX_CMP_LEGACY;
	}
	e = cpuid_find(c, 0x80000008, 0);
	if (e)
		e->ecx = (e->ecx & ~0xf0ffu) | ((ncpus - 1) & 0xff) | id_bits(ncpus) << 12;
	e = cpuid_find(c, 0x8000001e, 0);
	if (e) {
		e->eax = apic_id;                 /* extended APIC id */
		e->ebx = apic_id & 0xff;          /* core id; one thread per core */
		e->ecx = 0;                       /* node 0, one node per package */
		e->edx = 0;
	}
	set_cache_leaf(c, 0x8000001d, ncpus);
}

/* Leaf 0xD describes only the state components whose features remain. */
static void fix_xsave_leaf(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *l1 = cpuid_find(c, 1, 0), *d0, *d1;
	uint32_t drop = 0, max_size = XSAVE_LEGACY_AND_HEADER;

	if (!l1)
		return;
	if (!(l1->ecx & LEAF1_ECX_XSAVE)) {
		l1->ecx &= ~LEAF1_ECX_OSXSAVE;
		for (uint32_t i = 0; i < c->nent; i++) {
			struct kvm_cpuid_entry2 *e = &c->entries[i];

			if (e->function == 0xd)
				e->eax = e->ebx = e->ecx = e->edx = 0;
		}
		return;
	}
	d0 = cpuid_find(c, 0xd, 0);
	d1 = cpuid_find(c, 0xd, 1);
	if (!d0)
		return;
	for (unsigned i = 0; i < ARRAY_SIZE(xsave_components); i++)
		if (!feature_on(c, xsave_components[i].feature))
			drop |= xsave_components[i].xcr0;
	d0->eax &= ~drop;
	if (d1 && !(d1->eax & LEAFD1_EAX_XSAVES))
		d1->ecx = d1->edx = 0;
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function != 0xd || e->index < 2 || e->index >= 32)
			continue;
		if (drop & (1u << e->index)) {
			e->eax = e->ebx = e->ecx = e->edx = 0;
			continue;
		}
		/* Size of a user component (EAX) at its offset (EBX); the
		 * XSAVE area holding every enabled one ends at the last. */
		if ((d0->eax & (1u << e->index)) && e->eax + e->ebx > max_size)
			max_size = e->eax + e->ebx;
	}
	d0->ecx = max_size;
}

void cpuid_setup_vcpu(struct kvm_cpuid2 *cpuid, const struct cpuid_mask *m,
		      unsigned index, unsigned ncpus, uint32_t apic_id)
{
	bool supported[CPUID_MAX_OVERRIDES];
	unsigned n = m ? min_u(m->n, CPUID_MAX_OVERRIDES) : 0;

	/* What KVM offers, before this function changes anything: the
	 * limit of every '+' (invariant 1). */
	for (unsigned i = 0; i < n; i++) {
		const struct cpuid_override *o = &m->o[i];
		struct kvm_cpuid_entry2 *e = cpuid_find(cpuid, o->leaf, o->subleaf);

		supported[i] = e && o->bit < 32 && (*reg_of(e, o->reg) >> o->bit & 1);
	}
	if (ncpus == 0)
		ncpus = 1;

	set_leaf1(cpuid, ncpus, apic_id);
	set_cache_leaf(cpuid, 4, ncpus);
	set_ext_topology(cpuid, 0xb, ncpus, apic_id);
	set_ext_topology(cpuid, 0x1f, ncpus, apic_id);
	if (vendor_is_amd(cpuid))
		set_amd_topology(cpuid, ncpus, apic_id);

	for (unsigned i = 0; i < n; i++) {
		const struct cpuid_override *o = &m->o[i];
		struct kvm_cpuid_entry2 *e = cpuid_find(cpuid, o->leaf, o->subleaf);

		if (!e || o->bit >= 32)
			continue;
		/* A '+' on what KVM lacks changes nothing: it cannot invent the
		 * feature, nor take back a bit set above (hypervisor, HTT). */
		if (!o->enable)
			*reg_of(e, o->reg) &= ~(1u << o->bit);
		else if (supported[i])
			*reg_of(e, o->reg) |= 1u << o->bit;
	}
	fix_xsave_leaf(cpuid);
}
