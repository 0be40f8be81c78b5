/* proto/frame.c: frames come out whole, in order, however the bytes
 * arrive; lengths of 0 and above FRAME_MAX are refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

static void put(struct frame_buf *b, const void *payload, uint32_t len)
{
	uint8_t hdr[FRAME_HDR];

	frame_put_header(hdr, len);
	assert_int_equal(frame_buf_append(b, hdr, sizeof(hdr)), 0);
	assert_int_equal(frame_buf_append(b, payload, len), 0);
}

static void test_whole_frames_in_order(void **state)
{
	struct frame_buf b;
	const uint8_t *p;
	size_t len;

	frame_buf_init(&b);
	put(&b, "first", 5);
	put(&b, "second!", 7);
	assert_int_equal(frame_next(&b, &p, &len), 1);
	assert_int_equal(len, 5);
	assert_memory_equal(p, "first", 5);
	assert_int_equal(frame_next(&b, &p, &len), 1);
	assert_int_equal(len, 7);
	assert_memory_equal(p, "second!", 7);
	assert_int_equal(frame_next(&b, &p, &len), 0);
	frame_buf_free(&b);
}

/* One byte at a time: nothing until the last byte of each frame. */
static void test_byte_by_byte(void **state)
{
	struct frame_buf src, b;
	const uint8_t *p;
	size_t len;
	unsigned got = 0;

	frame_buf_init(&src);
	frame_buf_init(&b);
	put(&src, "abc", 3);
	put(&src, "0123456789", 10);
	for (size_t i = 0; i < src.len; i++) {
		assert_int_equal(frame_buf_append(&b, src.data + i, 1), 0);
		int r = frame_next(&b, &p, &len);
		if (i == FRAME_HDR + 3 - 1 || i == src.len - 1) {
			assert_int_equal(r, 1);
			assert_int_equal(len, got ? 10 : 3);
			got++;
		} else {
			assert_int_equal(r, 0);
		}
	}
	assert_int_equal(got, 2);
	frame_buf_free(&src);
	frame_buf_free(&b);
}

static void test_bad_lengths(void **state)
{
	static const uint32_t bad[] = { 0, FRAME_MAX + 1, 0xffffffffu };
	struct frame_buf b;
	const uint8_t *p;
	size_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t hdr[FRAME_HDR];

		frame_buf_init(&b);
		frame_put_header(hdr, bad[i]);
		assert_int_equal(frame_buf_append(&b, hdr, sizeof(hdr)), 0);
		assert_int_equal(frame_next(&b, &p, &len), -EMSGSIZE);
		assert_int_equal(len, bad[i]);
		frame_buf_free(&b);
	}
}

/* The largest frame allowed fits; the buffer never grows past it. */
static void test_largest_frame(void **state)
{
	struct frame_buf b;
	uint8_t *big = malloc(FRAME_MAX);
	const uint8_t *p;
	size_t len;

	assert_non_null(big);
	memset(big, 0x5a, FRAME_MAX);
	frame_buf_init(&b);
	put(&b, big, FRAME_MAX);
	assert_true(b.cap <= FRAME_HDR + FRAME_MAX);
	assert_int_equal(frame_next(&b, &p, &len), 1);
	assert_int_equal(len, FRAME_MAX);
	assert_memory_equal(p, big, FRAME_MAX);
	frame_buf_free(&b);
	free(big);
}

static void test_empty_buffer(void **state)
{
	struct frame_buf b;
	const uint8_t *p;
	size_t len;

	frame_buf_init(&b);
	assert_int_equal(frame_next(&b, &p, &len), 0);
	frame_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_frames_in_order),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_bad_lengths),
		cmocka_unit_test(test_largest_frame),
		cmocka_unit_test(test_empty_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
