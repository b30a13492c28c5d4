#include "network/openflow.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ big-endian */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* ------------------------------------------------------------ OXM */

#define OXM_CLASS_BASIC 0x8000
enum { OXM_IN_PORT = 0, OXM_ETH_DST = 3, OXM_ETH_SRC = 4, OXM_ETH_TYPE = 5, OXM_IPV4_DST = 12, OXM_ARP_OP = 21,
       OXM_ARP_TPA = 23 };
#define OFPMT_OXM 1
#define OFPIT_APPLY_ACTIONS 4
#define OFPAT_OUTPUT 0
#define OFPAT_SET_FIELD 25

/* One OXM TLV (no mask) at p; its length. */
static size_t oxm(uint8_t *p, uint8_t field, const uint8_t *value, uint8_t vlen)
{
	put16(p, OXM_CLASS_BASIC);
	p[2] = (uint8_t)(field << 1);
	p[3] = vlen;
	memcpy(p + 4, value, vlen);
	return 4u + vlen;
}

/* The match's OXM fields in ascending field order (as OVS and os-ken write
 * them); their total length.  p may be NULL to measure. */
static size_t oxm_fields(uint8_t *p, const fm_of_match *m)
{
	uint8_t tmp[64], v[6];
	uint8_t *o = p ? p : tmp;
	size_t n = 0;
	if (m->fields & FM_OFM_IN_PORT)
		put32(v, m->in_port), n += oxm(o + (p ? n : 0), OXM_IN_PORT, v, 4);
	if (m->fields & FM_OFM_ETH_DST)
		n += oxm(o + (p ? n : 0), OXM_ETH_DST, m->eth_dst, 6);
	if (m->fields & FM_OFM_ETH_SRC)
		n += oxm(o + (p ? n : 0), OXM_ETH_SRC, m->eth_src, 6);
	if (m->fields & FM_OFM_ETH_TYPE)
		put16(v, m->eth_type), n += oxm(o + (p ? n : 0), OXM_ETH_TYPE, v, 2);
	if (m->fields & FM_OFM_IPV4_DST)
		put32(v, m->ipv4_dst), n += oxm(o + (p ? n : 0), OXM_IPV4_DST, v, 4);
	if (m->fields & FM_OFM_ARP_OP)
		put16(v, m->arp_op), n += oxm(o + (p ? n : 0), OXM_ARP_OP, v, 2);
	if (m->fields & FM_OFM_ARP_TPA)
		put32(v, m->arp_tpa), n += oxm(o + (p ? n : 0), OXM_ARP_TPA, v, 4);
	return n;
}

/* ------------------------------------------------------------ encoders */

static void header(uint8_t *p, uint8_t type, uint16_t length, uint32_t xid)
{
	p[0] = FM_OF_VERSION;
	p[1] = type;
	put16(p + 2, length);
	put32(p + 4, xid);
}

size_t fm_of_encode_header_only(uint8_t *buf, size_t len, uint8_t type, uint32_t xid)
{
	if (len < FM_OF_HEADER_LEN)
		return 0;
	header(buf, type, FM_OF_HEADER_LEN, xid);
	return FM_OF_HEADER_LEN;
}

size_t fm_of_encode_echo_reply(uint8_t *buf, size_t len, uint32_t xid, const uint8_t *data, size_t dlen)
{
	size_t n = FM_OF_HEADER_LEN + dlen;
	if (n > len || n > FM_OF_MAX_LEN)
		return 0;
	header(buf, FM_OFPT_ECHO_REPLY, (uint16_t)n, xid);
	if (dlen)
		memcpy(buf + FM_OF_HEADER_LEN, data, dlen);
	return n;
}

void fm_of_flow_init(fm_of_flow *f, uint8_t command)
{
	memset(f, 0, sizeof(*f));
	f->command = command;
	f->priority = FM_OFP_DEFAULT_PRIORITY;
	f->buffer_id = FM_OFP_NO_BUFFER;
	f->out_port = FM_OFPP_ANY;
	f->out_group = FM_OFPG_ANY;
}

static size_t action_len(const fm_of_action *a)
{
	return a->kind == FM_OFA_OUTPUT ? 16 : pad8(4 + 4 + 6);
}

size_t fm_of_encode_flow_mod(uint8_t *buf, size_t len, uint32_t xid, const fm_of_flow *f)
{
	size_t mlen = 4 + oxm_fields(NULL, &f->match), alen = 0;
	if (f->nactions > FM_OF_MAX_ACTIONS)
		return 0;
	for (size_t i = 0; i < f->nactions; i++)
		alen += action_len(&f->actions[i]);
	size_t ilen = f->nactions ? 8 + alen : 0;
	size_t n = 48 + pad8(mlen) + ilen;
	if (n > len || n > FM_OF_MAX_LEN)
		return 0;
	memset(buf, 0, n);
	header(buf, FM_OFPT_FLOW_MOD, (uint16_t)n, xid);
	put64(buf + 8, f->cookie);
	put64(buf + 16, f->cookie_mask);
	buf[24] = f->table_id;
	buf[25] = f->command;
	put16(buf + 26, f->idle_timeout);
	put16(buf + 28, f->hard_timeout);
	put16(buf + 30, f->priority);
	put32(buf + 32, f->buffer_id);
	put32(buf + 36, f->out_port);
	put32(buf + 40, f->out_group);
	put16(buf + 44, f->flags);
	/* ofp_match: type, length (without padding), OXM fields, padding */
	uint8_t *m = buf + 48;
	put16(m, OFPMT_OXM);
	put16(m + 2, (uint16_t)mlen);
	oxm_fields(m + 4, &f->match);
	if (f->nactions) {
		uint8_t *in = buf + 48 + pad8(mlen);
		put16(in, OFPIT_APPLY_ACTIONS);
		put16(in + 2, (uint16_t)ilen);
		uint8_t *a = in + 8;
		for (size_t i = 0; i < f->nactions; i++) {
			const fm_of_action *x = &f->actions[i];
			size_t l = action_len(x);
			if (x->kind == FM_OFA_OUTPUT) {
				put16(a, OFPAT_OUTPUT);
				put16(a + 2, 16);
				put32(a + 4, x->port);
				put16(a + 8, FM_OFPCML_NO_BUFFER);
			} else {
				put16(a, OFPAT_SET_FIELD);
				put16(a + 2, (uint16_t)l);
				oxm(a + 4, OXM_ETH_DST, x->mac, 6);
			}
			a += l;
		}
	}
	return n;
}

/* ------------------------------------------------------------ decoders */

int fm_of_parse(const uint8_t *buf, size_t len, fm_of_msg *m, size_t *need)
{
	*need = FM_OF_HEADER_LEN;
	if (len < FM_OF_HEADER_LEN)
		return -EAGAIN;
	uint16_t l = get16(buf + 2);
	if (l < FM_OF_HEADER_LEN)
		return -EBADMSG;
	*need = l;
	if (len < l)
		return -EAGAIN;
	m->version = buf[0];
	m->type = buf[1];
	m->length = l;
	m->xid = get32(buf + 4);
	m->body = buf + FM_OF_HEADER_LEN;
	m->body_len = l - FM_OF_HEADER_LEN;
	return 0;
}

int fm_of_decode_features(const fm_of_msg *m, fm_of_features *f)
{
	if (m->type != FM_OFPT_FEATURES_REPLY || m->body_len < 24)
		return -EBADMSG;
	f->datapath_id = get64(m->body);
	f->n_buffers = get32(m->body + 8);
	f->n_tables = m->body[12];
	f->auxiliary_id = m->body[13];
	f->capabilities = get32(m->body + 16);
	return 0;
}

static const char *const error_types[] = {
	"HELLO_FAILED", "BAD_REQUEST", "BAD_ACTION", "BAD_INSTRUCTION", "BAD_MATCH", "FLOW_MOD_FAILED",
	"GROUP_MOD_FAILED", "PORT_MOD_FAILED", "TABLE_MOD_FAILED", "QUEUE_OP_FAILED", "SWITCH_CONFIG_FAILED",
	"ROLE_REQUEST_FAILED", "METER_MOD_FAILED", "TABLE_FEATURES_FAILED",
};
static const char *const bad_request[] = { "BAD_VERSION", "BAD_TYPE", "BAD_MULTIPART", "BAD_EXPERIMENTER",
	"BAD_EXP_TYPE", "EPERM", "BAD_LEN", "BUFFER_EMPTY", "BUFFER_UNKNOWN", "BAD_TABLE_ID", "IS_SLAVE", "BAD_PORT",
	"BAD_PACKET", "MULTIPART_BUFFER_OVERFLOW" };
static const char *const bad_action[] = { "BAD_TYPE", "BAD_LEN", "BAD_EXPERIMENTER", "BAD_EXP_TYPE", "BAD_OUT_PORT",
	"BAD_ARGUMENT", "EPERM", "TOO_MANY", "BAD_QUEUE", "BAD_OUT_GROUP", "MATCH_INCONSISTENT", "UNSUPPORTED_ORDER",
	"BAD_TAG", "BAD_SET_TYPE", "BAD_SET_LEN", "BAD_SET_ARGUMENT" };
static const char *const bad_instruction[] = { "UNKNOWN_INST", "UNSUP_INST", "BAD_TABLE_ID", "UNSUP_METADATA",
	"UNSUP_METADATA_MASK", "BAD_EXPERIMENTER", "BAD_EXP_TYPE", "BAD_LEN", "EPERM" };
static const char *const bad_match[] = { "BAD_TYPE", "BAD_LEN", "BAD_TAG", "BAD_DL_ADDR_MASK", "BAD_NW_ADDR_MASK",
	"BAD_WILDCARDS", "BAD_FIELD", "BAD_VALUE", "BAD_MASK", "BAD_PREREQ", "DUP_FIELD", "EPERM" };
static const char *const flow_mod_failed[] = { "UNKNOWN", "TABLE_FULL", "BAD_TABLE_ID", "OVERLAP", "EPERM",
	"BAD_TIMEOUT", "BAD_COMMAND", "BAD_FLAGS" };

#define NAME(tab, i) ((i) < sizeof(tab) / sizeof((tab)[0]) ? (tab)[i] : NULL)

int fm_of_decode_error(const fm_of_msg *m, uint16_t *type, uint16_t *code, char *text, size_t len)
{
	if (m->type != FM_OFPT_ERROR || m->body_len < 4)
		return -EBADMSG;
	*type = get16(m->body);
	*code = get16(m->body + 2);
	const char *t = NAME(error_types, *type), *c = NULL;
	switch (*type) {
	case 1: c = NAME(bad_request, *code); break;
	case 2: c = NAME(bad_action, *code); break;
	case 3: c = NAME(bad_instruction, *code); break;
	case 4: c = NAME(bad_match, *code); break;
	case 5: c = NAME(flow_mod_failed, *code); break;
	default: break;
	}
	char tb[16], cb[16];
	snprintf(tb, sizeof(tb), "type %u", *type);
	snprintf(cb, sizeof(cb), "code %u", *code);
	/* the data holds (at least 64 bytes of) the request that failed: name its type */
	char req[48] = "";
	if (m->body_len >= 4 + FM_OF_HEADER_LEN)
		snprintf(req, sizeof(req), " (in reply to a message of type %u, xid %u)", m->body[5],
			 get32(m->body + 4 + 4));
	snprintf(text, len, "%s/%s%s", t ? t : tb, c ? c : cb, req);
	return 0;
}

/* OXM fields of a match body (after its 4-byte header). */
static int decode_match(const uint8_t *p, size_t n, fm_of_match *m)
{
	memset(m, 0, sizeof(*m));
	while (n > 0) {
		if (n < 4 || get16(p) != OXM_CLASS_BASIC || (p[2] & 1))
			return -EBADMSG; /* another class, or a mask: not ours */
		uint8_t field = p[2] >> 1, l = p[3];
		if (n < 4u + l)
			return -EBADMSG;
		const uint8_t *v = p + 4;
		unsigned bit;
		uint8_t want;
		switch (field) {
		case OXM_IN_PORT: bit = FM_OFM_IN_PORT, want = 4; break;
		case OXM_ETH_DST: bit = FM_OFM_ETH_DST, want = 6; break;
		case OXM_ETH_SRC: bit = FM_OFM_ETH_SRC, want = 6; break;
		case OXM_ETH_TYPE: bit = FM_OFM_ETH_TYPE, want = 2; break;
		case OXM_IPV4_DST: bit = FM_OFM_IPV4_DST, want = 4; break;
		case OXM_ARP_OP: bit = FM_OFM_ARP_OP, want = 2; break;
		case OXM_ARP_TPA: bit = FM_OFM_ARP_TPA, want = 4; break;
		default: return -EBADMSG;
		}
		if (l != want || (m->fields & bit))
			return -EBADMSG;
		m->fields |= bit;
		switch (field) {
		case OXM_IN_PORT: m->in_port = get32(v); break;
		case OXM_ETH_DST: memcpy(m->eth_dst, v, 6); break;
		case OXM_ETH_SRC: memcpy(m->eth_src, v, 6); break;
		case OXM_ETH_TYPE: m->eth_type = get16(v); break;
		case OXM_IPV4_DST: m->ipv4_dst = get32(v); break;
		case OXM_ARP_OP: m->arp_op = get16(v); break;
		default: m->arp_tpa = get32(v); break;
		}
		p += 4u + l;
		n -= 4u + l;
	}
	return 0;
}

int fm_of_decode_flow_mod(const fm_of_msg *m, fm_of_flow *f)
{
	const uint8_t *b = m->body;
	size_t n = m->body_len;
	if (m->type != FM_OFPT_FLOW_MOD || n < 40 + 4)
		return -EBADMSG;
	fm_of_flow_init(f, b[17]);
	f->cookie = get64(b);
	f->cookie_mask = get64(b + 8);
	f->table_id = b[16];
	f->idle_timeout = get16(b + 18);
	f->hard_timeout = get16(b + 20);
	f->priority = get16(b + 22);
	f->buffer_id = get32(b + 24);
	f->out_port = get32(b + 28);
	f->out_group = get32(b + 32);
	f->flags = get16(b + 36);
	/* the match at body offset 40 */
	const uint8_t *mp = b + 40;
	uint16_t mtype = get16(mp), mlen = get16(mp + 2);
	if (mtype != OFPMT_OXM || mlen < 4 || 40 + pad8(mlen) > n)
		return -EBADMSG;
	if (decode_match(mp + 4, mlen - 4u, &f->match) < 0)
		return -EBADMSG;
	const uint8_t *ip = b + 40 + pad8(mlen);
	size_t left = n - 40 - pad8(mlen);
	if (left == 0)
		return 0;
	if (left < 8 || get16(ip) != OFPIT_APPLY_ACTIONS || get16(ip + 2) != left)
		return -EBADMSG; /* one APPLY_ACTIONS, exactly the rest */
	const uint8_t *a = ip + 8;
	left -= 8;
	while (left > 0) {
		if (left < 8 || f->nactions == FM_OF_MAX_ACTIONS)
			return -EBADMSG;
		uint16_t at = get16(a), al = get16(a + 2);
		if (al < 8 || al > left || al % 8)
			return -EBADMSG;
		fm_of_action *x = &f->actions[f->nactions++];
		if (at == OFPAT_OUTPUT && al == 16) {
			x->kind = FM_OFA_OUTPUT;
			x->port = get32(a + 4);
		} else if (at == OFPAT_SET_FIELD && al == 16 && get16(a + 4) == OXM_CLASS_BASIC &&
			   a[6] == OXM_ETH_DST << 1 && a[7] == 6) {
			x->kind = FM_OFA_SET_ETH_DST;
			memcpy(x->mac, a + 8, 6);
		} else {
			return -EBADMSG;
		}
		a += al;
		left -= al;
	}
	return 0;
}
