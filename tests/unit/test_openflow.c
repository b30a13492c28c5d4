/* Unit tests: the OpenFlow 1.3 codec (network/openflow.c): round trips,
 * truncated and hostile input, ERROR naming.  (Byte-for-byte equality with
 * os-ken: tests/e2e/test_openflow.py.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "network/openflow.h"

static fm_of_flow sample(void)
{
	fm_of_flow f;
	fm_of_flow_init(&f, FM_OFPFC_ADD);
	f.cookie = 0x464d000000000042ull;
	f.priority = 300;
	f.idle_timeout = 7;
	f.match.fields = FM_OFM_IN_PORT | FM_OFM_ETH_TYPE | FM_OFM_IPV4_DST | FM_OFM_ETH_DST;
	f.match.in_port = 9;
	f.match.eth_type = 0x0800;
	f.match.ipv4_dst = 0x0a4d0063;
	memcpy(f.match.eth_dst, "\x02\x00\x00\x00\x00\x01", 6);
	f.actions[0] = (fm_of_action){ .kind = FM_OFA_SET_ETH_DST };
	memcpy(f.actions[0].mac, "\x02\x00\x00\x00\x00\x02", 6);
	f.actions[1] = (fm_of_action){ .kind = FM_OFA_OUTPUT, .port = 4 };
	f.nactions = 2;
	return f;
}

static void test_round_trip(void **state)
{
	uint8_t buf[512];
	fm_of_flow f = sample(), g;
	fm_of_msg m;
	size_t need;
	size_t n = fm_of_encode_flow_mod(buf, sizeof(buf), 77, &f);
	assert_true(n > 0 && n % 8 == 0);
	assert_int_equal(fm_of_parse(buf, n, &m, &need), 0);
	assert_int_equal(m.type, FM_OFPT_FLOW_MOD);
	assert_int_equal(m.xid, 77);
	assert_int_equal(fm_of_decode_flow_mod(&m, &g), 0);
	assert_int_equal(g.cookie, f.cookie);
	assert_int_equal(g.priority, 300);
	assert_int_equal(g.idle_timeout, 7);
	assert_int_equal(g.match.fields, f.match.fields);
	assert_int_equal(g.match.in_port, 9);
	assert_int_equal(g.match.ipv4_dst, 0x0a4d0063);
	assert_memory_equal(g.match.eth_dst, f.match.eth_dst, 6);
	assert_int_equal(g.nactions, 2);
	assert_int_equal(g.actions[0].kind, FM_OFA_SET_ETH_DST);
	assert_memory_equal(g.actions[0].mac, f.actions[0].mac, 6);
	assert_int_equal(g.actions[1].port, 4);
	/* too small a buffer: nothing written */
	assert_int_equal(fm_of_encode_flow_mod(buf, n - 1, 1, &f), 0);
	f.nactions = FM_OF_MAX_ACTIONS + 1;
	assert_int_equal(fm_of_encode_flow_mod(buf, sizeof(buf), 1, &f), 0);
}

static void test_parse_bounds(void **state)
{
	uint8_t buf[64];
	fm_of_msg m;
	size_t need;
	size_t n = fm_of_encode_header_only(buf, sizeof(buf), FM_OFPT_BARRIER_REPLY, 5);
	assert_int_equal(fm_of_parse(buf, 3, &m, &need), -EAGAIN);
	assert_int_equal(need, 8);
	assert_int_equal(fm_of_parse(buf, n, &m, &need), 0);
	/* a length below the header's: garbage */
	buf[2] = 0, buf[3] = 4;
	assert_int_equal(fm_of_parse(buf, n, &m, &need), -EBADMSG);
	/* a longer message than we have: wait for it */
	buf[3] = 40;
	assert_int_equal(fm_of_parse(buf, n, &m, &need), -EAGAIN);
	assert_int_equal(need, 40);
}

static void test_hostile_flow_mods(void **state)
{
	uint8_t buf[512];
	fm_of_flow f = sample(), g;
	fm_of_msg m;
	size_t need, n = fm_of_encode_flow_mod(buf, sizeof(buf), 1, &f);
	/* every truncation of the body is refused, never read past */
	for (size_t cut = 8; cut < n; cut++) {
		uint8_t *copy = malloc(cut);
		memcpy(copy, buf, cut);
		copy[2] = (uint8_t)(cut >> 8), copy[3] = (uint8_t)cut;
		assert_int_equal(fm_of_parse(copy, cut, &m, &need), 0);
		int r = fm_of_decode_flow_mod(&m, &g);
		/* cutting exactly before the instructions leaves a valid flow without actions */
		assert_true(r == -EBADMSG || (r == 0 && g.nactions == 0));
		free(copy);
	}
	/* a duplicated match field, an unknown one, a masked one */
	uint8_t *oxm = buf + 8 + 40 + 4; /* first OXM: in_port */
	uint8_t saved = oxm[2];
	oxm[2] = (uint8_t)(0x7f << 1);
	assert_int_equal(fm_of_parse(buf, n, &m, &need), 0);
	assert_int_equal(fm_of_decode_flow_mod(&m, &g), -EBADMSG);
	oxm[2] = saved | 1;
	assert_int_equal(fm_of_decode_flow_mod(&m, &g), -EBADMSG);
	oxm[2] = saved;
	assert_int_equal(fm_of_decode_flow_mod(&m, &g), 0);
	/* an action length that is not a multiple of 8, or runs past the end */
	uint8_t *act = buf + n - 16;
	act[3] = 12;
	assert_int_equal(fm_of_decode_flow_mod(&m, &g), -EBADMSG);
	act[3] = 32;
	assert_int_equal(fm_of_decode_flow_mod(&m, &g), -EBADMSG);
}

static void test_error_text(void **state)
{
	/* ERROR BAD_MATCH/BAD_PREREQ carrying the start of our FLOW_MOD (xid 9) */
	uint8_t buf[64] = { 4, FM_OFPT_ERROR, 0, 8 + 4 + 8, 0, 0, 0, 9, 0, 4, 0, 9, 4, FM_OFPT_FLOW_MOD, 0, 64, 0, 0, 0, 9 };
	fm_of_msg m;
	size_t need;
	uint16_t type, code;
	char text[160];
	assert_int_equal(fm_of_parse(buf, 20, &m, &need), 0);
	assert_int_equal(fm_of_decode_error(&m, &type, &code, text, sizeof(text)), 0);
	assert_int_equal(type, 4);
	assert_int_equal(code, 9);
	assert_string_equal(text, "BAD_MATCH/BAD_PREREQ (in reply to a message of type 14, xid 9)");
	/* unknown numbers are shown as numbers */
	buf[9] = 99, buf[11] = 200;
	assert_int_equal(fm_of_decode_error(&m, &type, &code, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "type 99/code 200"));
	/* not an ERROR, or too short */
	m.type = FM_OFPT_HELLO;
	assert_int_equal(fm_of_decode_error(&m, &type, &code, text, sizeof(text)), -EBADMSG);
	fm_of_features feat;
	assert_int_equal(fm_of_decode_features(&m, &feat), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_parse_bounds),
		cmocka_unit_test(test_hostile_flow_mods),
		cmocka_unit_test(test_error_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
