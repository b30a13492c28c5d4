/* SDN Controller Interface, wire format: the part of OpenFlow 1.3 (wire
 * version 0x04, the ONF specification 1.3.5) FlexiMigrate speaks to a switch.
 * No OpenFlow library exists in Debian; this is a small encoder and a
 * bounds-checked decoder, tested byte for byte against os-ken's parser and
 * against Open vSwitch, and fuzzed.
 *
 * Messages: HELLO, ECHO_REQUEST/REPLY, FEATURES_REQUEST/REPLY, FLOW_MOD,
 * BARRIER_REQUEST/REPLY, ERROR.  Matches (OXM, OpenFlow basic class): in_port,
 * eth_dst, eth_src, eth_type, ipv4_dst, arp_op, arp_tpa.  Instructions: one
 * APPLY_ACTIONS with OUTPUT and SET_FIELD eth_dst actions.  Multi-byte fields
 * are given in host order here and travel in network order. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FM_OF_VERSION 0x04
#define FM_OF_HEADER_LEN 8
#define FM_OF_MAX_LEN 65535

enum {
	FM_OFPT_HELLO = 0,
	FM_OFPT_ERROR = 1,
	FM_OFPT_ECHO_REQUEST = 2,
	FM_OFPT_ECHO_REPLY = 3,
	FM_OFPT_FEATURES_REQUEST = 5,
	FM_OFPT_FEATURES_REPLY = 6,
	FM_OFPT_PACKET_IN = 10,
	FM_OFPT_FLOW_REMOVED = 11,
	FM_OFPT_PORT_STATUS = 12,
	FM_OFPT_FLOW_MOD = 14,
	FM_OFPT_BARRIER_REQUEST = 20,
	FM_OFPT_BARRIER_REPLY = 21,
};

enum { FM_OFPFC_ADD = 0, FM_OFPFC_MODIFY = 1, FM_OFPFC_MODIFY_STRICT = 2, FM_OFPFC_DELETE = 3, FM_OFPFC_DELETE_STRICT = 4 };

#define FM_OFPP_ANY 0xffffffffu
#define FM_OFPP_CONTROLLER 0xfffffffdu
#define FM_OFPP_NORMAL 0xfffffffau
#define FM_OFPG_ANY 0xffffffffu
#define FM_OFP_NO_BUFFER 0xffffffffu
#define FM_OFPCML_NO_BUFFER 0xffff
#define FM_OFPFF_SEND_FLOW_REM 0x0001
#define FM_OFP_DEFAULT_PRIORITY 0x8000

/* Which match fields are set. */
enum {
	FM_OFM_IN_PORT = 1 << 0,
	FM_OFM_ETH_DST = 1 << 1,
	FM_OFM_ETH_SRC = 1 << 2,
	FM_OFM_ETH_TYPE = 1 << 3,
	FM_OFM_IPV4_DST = 1 << 4,
	FM_OFM_ARP_OP = 1 << 5,
	FM_OFM_ARP_TPA = 1 << 6,
};

typedef struct fm_of_match {
	unsigned fields;
	uint32_t in_port;
	uint8_t eth_dst[6], eth_src[6];
	uint16_t eth_type;
	uint32_t ipv4_dst;       /* host order: 10.77.0.10 = 0x0a4d000a */
	uint16_t arp_op;
	uint32_t arp_tpa;
} fm_of_match;

typedef enum { FM_OFA_OUTPUT, FM_OFA_SET_ETH_DST } fm_of_action_kind;

typedef struct fm_of_action {
	fm_of_action_kind kind;
	uint32_t port;           /* OUTPUT */
	uint8_t mac[6];          /* SET_ETH_DST */
} fm_of_action;

#define FM_OF_MAX_ACTIONS 8

typedef struct fm_of_flow {
	uint64_t cookie, cookie_mask;
	uint8_t table_id;
	uint8_t command;         /* FM_OFPFC_* */
	uint16_t idle_timeout, hard_timeout, priority, flags;
	uint32_t buffer_id, out_port, out_group;
	fm_of_match match;
	fm_of_action actions[FM_OF_MAX_ACTIONS];
	size_t nactions;         /* 0: no instruction (drop, or a delete) */
} fm_of_flow;

/* Encoders write into buf (len bytes) and return the message's length, or 0
 * when it does not fit. */
size_t fm_of_encode_header_only(uint8_t *buf, size_t len, uint8_t type, uint32_t xid);
size_t fm_of_encode_echo_reply(uint8_t *buf, size_t len, uint32_t xid, const uint8_t *data, size_t dlen);
size_t fm_of_encode_flow_mod(uint8_t *buf, size_t len, uint32_t xid, const fm_of_flow *f);
/* A flow with the specification's defaults: priority 0x8000, buffer
 * NO_BUFFER, out_port ANY, out_group ANY, table 0, no timeouts. */
void fm_of_flow_init(fm_of_flow *f, uint8_t command);

typedef struct fm_of_msg {
	uint8_t version, type;
	uint16_t length;         /* whole message */
	uint32_t xid;
	const uint8_t *body;     /* after the header */
	size_t body_len;
} fm_of_msg;

/* The message at the start of buf: 0, -EAGAIN when more bytes are needed
 * (*need says how many in all), -EBADMSG when the header is impossible. */
int fm_of_parse(const uint8_t *buf, size_t len, fm_of_msg *m, size_t *need);

typedef struct fm_of_features {
	uint64_t datapath_id;
	uint32_t n_buffers;
	uint8_t n_tables, auxiliary_id;
	uint32_t capabilities;
} fm_of_features;
int fm_of_decode_features(const fm_of_msg *m, fm_of_features *f);

/* An ERROR's type and code, and a text naming them ("BAD_MATCH/BAD_FIELD:
 * ..."); -EBADMSG if it is not a well-formed ERROR. */
int fm_of_decode_error(const fm_of_msg *m, uint16_t *type, uint16_t *code, char *text, size_t len);

/* A FLOW_MOD back into a flow (tests, the fuzzer); -EBADMSG on anything
 * outside the subset above or malformed. */
int fm_of_decode_flow_mod(const fm_of_msg *m, fm_of_flow *f);
