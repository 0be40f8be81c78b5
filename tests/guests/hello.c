/* hello: one line, then what the command line asks for (README.md). */
#include "lib/guest.h"

#define FADT_FLAGS              112
#define FADT_RESET_REG          116
#define FADT_RESET_VALUE        128
#define FADT_PM1A_CNT_BLK       64
#define FADT_X_PM1A_CNT_BLK     172
#define FADT_SLEEP_CONTROL_REG  244
#define FADT_FLAG_RESET_REG_SUP (1u << 10)
#define FADT_FLAG_HW_REDUCED    (1u << 20)
#define SLP_EN_HW_REDUCED       0x20    /* sleep control register bit 5 */
#define PM1_SLP_EN              0x2000  /* PM1 control bit 13 */

#define TICK_NS 50000000ULL

static const uint8_t *fadt_get(void)
{
	const struct acpi_header *h = acpi_find_table("FACP", 0);
	if (!h)
		printf("hello: FAIL no FADT found (RSDP %s)\n",
		       acpi_find_rsdp() ? "found" : "not found");
	return (const uint8_t *)h;
}

static const char *space_name(const struct acpi_gas *g)
{
	return g->space_id == ACPI_GAS_IO ? "io" : g->space_id == ACPI_GAS_MEMORY ? "mmio" : "?";
}

static int poweroff(void)
{
	const uint8_t *f = fadt_get();
	if (!f)
		return GUEST_EXIT_FAIL;
	uint32_t len = ((const struct acpi_header *)f)->length;
	uint32_t flags = *(const uint32_t *)(f + FADT_FLAGS);
	int s5 = acpi_s5_type();
	if (s5 < 0) {
		printf("hello: FAIL no \\_S5 package in the DSDT\n");
		return GUEST_EXIT_FAIL;
	}
	struct acpi_gas reg;
	uint64_t val;
	if ((flags & FADT_FLAG_HW_REDUCED) && len >= FADT_SLEEP_CONTROL_REG + 12) {
		memcpy(&reg, f + FADT_SLEEP_CONTROL_REG, sizeof(reg));
		val = (uint64_t)(s5 & 7) << 2 | SLP_EN_HW_REDUCED;
	} else {
		reg = (struct acpi_gas){ ACPI_GAS_IO, 16, 0, 2, *(const uint32_t *)(f + FADT_PM1A_CNT_BLK) };
		if (len >= FADT_X_PM1A_CNT_BLK + 12 && *(const uint64_t *)(f + FADT_X_PM1A_CNT_BLK + 4))
			memcpy(&reg, f + FADT_X_PM1A_CNT_BLK, sizeof(reg));
		val = (uint64_t)(s5 & 7) << 10 | PM1_SLP_EN;
	}
	if (!reg.address) {
		printf("hello: FAIL the FADT names no sleep control register\n");
		return GUEST_EXIT_FAIL;
	}
	printf("hello: powering off (S5 type %d, %s register %s 0x%lx)\n", s5,
	       (flags & FADT_FLAG_HW_REDUCED) ? "sleep control" : "PM1a control",
	       space_name(&reg), reg.address);
	if (acpi_gas_write(&reg, val) < 0) {
		printf("hello: FAIL cannot write that register\n");
		return GUEST_EXIT_FAIL;
	}
	time_init();
	delay_us(1000000);
	printf("hello: FAIL still running 1 s after the S5 request\n");
	return GUEST_EXIT_FAIL;
}

static int reset(void)
{
	const uint8_t *f = fadt_get();
	if (!f)
		return GUEST_EXIT_FAIL;
	uint32_t len = ((const struct acpi_header *)f)->length;
	uint32_t flags = *(const uint32_t *)(f + FADT_FLAGS);
	if (!(flags & FADT_FLAG_RESET_REG_SUP) || len < FADT_RESET_VALUE + 1) {
		printf("hello: FAIL the FADT has no reset register (flags 0x%x)\n", flags);
		return GUEST_EXIT_FAIL;
	}
	struct acpi_gas reg;
	memcpy(&reg, f + FADT_RESET_REG, sizeof(reg));
	uint8_t val = f[FADT_RESET_VALUE];
	printf("hello: resetting (value 0x%x to %s 0x%lx)\n", val, space_name(&reg), reg.address);
	if (acpi_gas_write(&reg, val) < 0) {
		printf("hello: FAIL cannot write the reset register\n");
		return GUEST_EXIT_FAIL;
	}
	time_init();
	delay_us(1000000);
	printf("hello: FAIL still running 1 s after the reset request\n");
	return GUEST_EXIT_FAIL;
}

static void __attribute__((noreturn)) ticks(void)
{
	time_init();
	printf("hello: ticking every %llu ms (%s)\n", TICK_NS / 1000000, time_source());
	uint64_t next = time_ns();
	for (uint64_t n = 0;; n++) {
		next += TICK_NS;
		while (time_ns() < next)
			cpu_relax();
		printf("hello: tick %lu\n", n);
	}
}

/* Reads one line typed on the console (polling the UART) and echoes it. */
static int echo(void)
{
	char line[128];
	size_t n = 0;
	uint64_t deadline;

	time_init();
	deadline = time_ns() + 10000000000ULL;
	printf("hello: type a line\n");
	while (time_ns() < deadline) {
		int c = serial_getc();

		if (c < 0) {
			cpu_relax();
			continue;
		}
		if (c == '\r' || c == '\n') {
			line[n] = 0;
			printf("hello: echo '%s'\n", line);
			return 0;
		}
		if (n < sizeof(line) - 1)
			line[n++] = (char)c;
	}
	printf("hello: FAIL no complete line within 10 s (%lu bytes)\n", (uint64_t)n);
	return GUEST_EXIT_FAIL;
}

int main(void)
{
	const char *cl = bootinfo.cmdline;
	uint64_t code = 0;

	printf("hello: hello from a test guest\n");
	if (cmdline_has(cl, "hello.ticks"))
		ticks();
	if (cmdline_has(cl, "hello.echo"))
		return echo();
	if (cmdline_has(cl, "hello.poweroff"))
		return poweroff();
	if (cmdline_has(cl, "hello.reset"))
		return reset();
	if (cmdline_has(cl, "hello.crash")) {
		printf("hello: crashing (triple fault)\n");
		sys_call(SYS_CRASH, 0, 0);
		printf("hello: FAIL still running after a triple fault\n");
		return GUEST_EXIT_FAIL;
	}
	int r = cmdline_get_u64(cl, "hello.exit", &code);
	if (r == -22 || code > 255) {
		printf("hello: FAIL hello.exit wants a number 0-255\n");
		return GUEST_EXIT_FAIL;
	}
	printf("hello: exiting with code %lu\n", code);
	return (int)code;
}
