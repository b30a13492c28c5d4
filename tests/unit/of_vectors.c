/* Prints our OpenFlow 1.3 encodings of a set of messages as JSON lines
 * {"name", "hex"}, for tests/e2e/test_openflow.py to check byte for byte
 * against os-ken's encoder and parser (Debian's python3-os-ken). */
#include <stdio.h>
#include <string.h>

#include "network/openflow.h"

static void emit(const char *name, const uint8_t *b, size_t n)
{
	printf("{\"name\": \"%s\", \"hex\": \"", name);
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\"}\n");
}

int main(void)
{
	uint8_t buf[1024];
	size_t n;
	fm_of_flow f;
	const uint8_t mac[6] = { 0x02, 0xfd, 0x0a, 0x4d, 0x00, 0x0a };

	n = fm_of_encode_header_only(buf, sizeof(buf), FM_OFPT_HELLO, 1);
	emit("hello", buf, n);
	n = fm_of_encode_header_only(buf, sizeof(buf), FM_OFPT_FEATURES_REQUEST, 2);
	emit("features_request", buf, n);
	n = fm_of_encode_header_only(buf, sizeof(buf), FM_OFPT_BARRIER_REQUEST, 3);
	emit("barrier_request", buf, n);
	n = fm_of_encode_echo_reply(buf, sizeof(buf), 4, (const uint8_t *)"ping", 4);
	emit("echo_reply", buf, n);

	/* the redirect: traffic for the service address to the new host's port */
	fm_of_flow_init(&f, FM_OFPFC_ADD);
	f.cookie = 0x464d000000000001ull;
	f.priority = 200;
	f.match.fields = FM_OFM_ETH_TYPE | FM_OFM_IPV4_DST;
	f.match.eth_type = 0x0800;
	f.match.ipv4_dst = 0x0a4d000a;
	f.actions[0] = (fm_of_action){ .kind = FM_OFA_SET_ETH_DST };
	memcpy(f.actions[0].mac, mac, 6);
	f.actions[1] = (fm_of_action){ .kind = FM_OFA_OUTPUT, .port = 2 };
	f.nactions = 2;
	n = fm_of_encode_flow_mod(buf, sizeof(buf), 5, &f);
	emit("flow_redirect_ip", buf, n);

	/* ARP for it, every field we match on */
	fm_of_flow_init(&f, FM_OFPFC_MODIFY_STRICT);
	f.cookie = 0x464d000000000002ull;
	f.priority = 201;
	f.idle_timeout = 30;
	f.hard_timeout = 300;
	f.flags = FM_OFPFF_SEND_FLOW_REM;
	f.table_id = 0;
	f.match.fields = FM_OFM_IN_PORT | FM_OFM_ETH_DST | FM_OFM_ETH_SRC | FM_OFM_ETH_TYPE | FM_OFM_ARP_OP |
			 FM_OFM_ARP_TPA;
	f.match.in_port = 3;
	memcpy(f.match.eth_dst, "\xff\xff\xff\xff\xff\xff", 6);
	memcpy(f.match.eth_src, mac, 6);
	f.match.eth_type = 0x0806;
	f.match.arp_op = 1;
	f.match.arp_tpa = 0x0a4d000a;
	f.actions[0] = (fm_of_action){ .kind = FM_OFA_OUTPUT, .port = FM_OFPP_NORMAL };
	f.nactions = 1;
	n = fm_of_encode_flow_mod(buf, sizeof(buf), 6, &f);
	emit("flow_arp_all_fields", buf, n);

	/* delete everything of our cookie space */
	fm_of_flow_init(&f, FM_OFPFC_DELETE);
	f.cookie = 0x464d000000000000ull;
	f.cookie_mask = 0xffff000000000000ull;
	f.table_id = 0xff; /* OFPTT_ALL */
	n = fm_of_encode_flow_mod(buf, sizeof(buf), 7, &f);
	emit("flow_delete_cookie", buf, n);

	/* the NORMAL flow an active controller must put back (priority 0: under everything) */
	fm_of_flow_init(&f, FM_OFPFC_ADD);
	f.priority = 0;
	f.actions[0] = (fm_of_action){ .kind = FM_OFA_OUTPUT, .port = FM_OFPP_NORMAL };
	f.nactions = 1;
	n = fm_of_encode_flow_mod(buf, sizeof(buf), 8, &f);
	emit("flow_normal", buf, n);
	return 0;
}
