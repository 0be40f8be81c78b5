/* COM1 (16550) output, polled: 115200 8N1, FIFOs on, no interrupts. */
#include "guest.h"

#define COM1      0x3f8
#define UART_THR  0
#define UART_DLL  0
#define UART_IER  1
#define UART_DLM  1
#define UART_FCR  2
#define UART_LCR  3
#define UART_MCR  4
#define UART_LSR  5
#define LSR_DR    0x01
#define LSR_THRE  0x20
#define LCR_DLAB  0x80
#define LCR_8N1   0x03

void serial_init(void)
{
	outb(COM1 + UART_IER, 0);
	outb(COM1 + UART_LCR, LCR_DLAB);
	outb(COM1 + UART_DLL, 1);          /* 115200 baud */
	outb(COM1 + UART_DLM, 0);
	outb(COM1 + UART_LCR, LCR_8N1);
	outb(COM1 + UART_FCR, 0xc7);       /* enable and clear FIFOs */
	outb(COM1 + UART_MCR, 0x03);       /* DTR, RTS */
}

void serial_putc(char c)
{
	/* A missing UART reads 0xff, so this cannot spin for ever there. */
	while (!(inb(COM1 + UART_LSR) & LSR_THRE))
		cpu_relax();
	outb(COM1 + UART_THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		serial_putc(s[i]);
}

int serial_getc(void)
{
	uint8_t lsr = inb(COM1 + UART_LSR);

	/* 0xff: no UART there. */
	if (lsr == 0xff || !(lsr & LSR_DR))
		return -1;
	return inb(COM1 + UART_THR);
}
