#include "network/redirect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/log.h"
#include "basic/periodic.h"
#include "basic/util.h"
#include "network/ovsdb.h"
#include "network/sdn.h"

#define REDIRECT_TIMEOUT_MS 3000

struct fm_redirector {
	char *sdn, *ovsdb;
	pthread_mutex_t lock;
	fm_sdn *conn;
	fm_periodic watch;
};

/* Every FM_REDIRECT_WATCH_MS: a barrier on the switch connection, if there
 * is one; a switch that went away (ovs-vswitchd restarted: its flows are
 * gone) gets them back at once, not at the next migration. */
static void watch(void *opaque)
{
	fm_redirector *r = opaque;
	fm_error e = FM_ERROR_INIT;
	pthread_mutex_lock(&r->lock);
	if (r->conn && fm_sdn_barrier(r->conn, &e) < 0) {
		fm_warn(FM_C_SDN, "The switch at %s went away (%s): reconnecting and replaying our flows", r->sdn, e.msg);
		fm_error_clear(&e);
		if (fm_sdn_replay(r->conn, &e) < 0)
			fm_warn(FM_C_SDN, "The switch at %s is not back yet: %s", r->sdn, e.msg);
	}
	pthread_mutex_unlock(&r->lock);
	fm_error_clear(&e);
}

fm_redirector *fm_redirector_new(const char *sdn, const char *ovsdb)
{
	fm_redirector *r = fm_xcalloc(1, sizeof(*r));
	r->sdn = fm_xstrdup(sdn);
	r->ovsdb = fm_xstrdup(ovsdb);
	pthread_mutex_init(&r->lock, NULL);
	if (fm_periodic_start(&r->watch, (int64_t)FM_REDIRECT_WATCH_MS * 1000, false, watch, r) < 0)
		fm_warn(FM_C_SDN, "No watch on the switch connection: flows come back at the next migration only");
	return r;
}

void fm_redirector_free(fm_redirector *r)
{
	if (!r)
		return;
	fm_periodic_stop(&r->watch);
	fm_sdn_close(r->conn);
	pthread_mutex_destroy(&r->lock);
	free(r->sdn);
	free(r->ovsdb);
	free(r);
}

const char *fm_redirector_target(const fm_redirector *r)
{
	return r->sdn;
}

int fm_redirector_port(fm_redirector *r, const char *iface, int64_t *ofport, fm_error *err)
{
	fm_ovs_port p;
	int x = fm_ovsdb_port(r->ovsdb, iface, REDIRECT_TIMEOUT_MS, &p, err);
	if (x < 0)
		return x;
	if (p.ofport <= 0)
		return fm_error_set(err, -ENODEV, "interface %s has no OpenFlow port on the switch (yet)", iface);
	*ofport = p.ofport;
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	if (!s || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6 || strlen(s) != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

/* The two flows of an address (without their command). */
static int flows_of(const char *ip, const uint8_t *mac, uint32_t port, fm_of_flow f[2], fm_error *err)
{
	struct in_addr a;
	if (inet_pton(AF_INET, ip, &a) != 1)
		return fm_error_set(err, -EINVAL, "not an IPv4 address: %s", ip);
	uint32_t h = ntohl(a.s_addr);
	for (int i = 0; i < 2; i++) {
		fm_of_flow_init(&f[i], FM_OFPFC_ADD);
		f[i].cookie = FM_SDN_COOKIE_BASE | (uint64_t)h << 8 | (uint64_t)i;
		f[i].priority = FM_REDIRECT_PRIORITY;
	}
	f[0].match.fields = FM_OFM_ETH_TYPE | FM_OFM_IPV4_DST;
	f[0].match.eth_type = 0x0800;
	f[0].match.ipv4_dst = h;
	if (mac) {
		f[0].actions[f[0].nactions] = (fm_of_action){ .kind = FM_OFA_SET_ETH_DST };
		memcpy(f[0].actions[f[0].nactions++].mac, mac, 6);
	}
	f[0].actions[f[0].nactions++] = (fm_of_action){ .kind = FM_OFA_OUTPUT, .port = port };
	f[1].match.fields = FM_OFM_ETH_TYPE | FM_OFM_ARP_TPA;
	f[1].match.eth_type = 0x0806;
	f[1].match.arp_tpa = h;
	f[1].actions[f[1].nactions++] = (fm_of_action){ .kind = FM_OFA_OUTPUT, .port = port };
	return 0;
}

/* Sends flows (under the lock), reconnecting and replaying once if the
 * switch went away. */
static int send_locked(fm_redirector *r, fm_of_flow *f, size_t n, fm_error *err)
{
	int x;
	for (int attempt = 0; attempt < 2; attempt++) {
		fm_error_clear(err);
		if (!r->conn) {
			if ((x = fm_sdn_connect(r->sdn, REDIRECT_TIMEOUT_MS, &r->conn, err)) < 0)
				return x;
		} else if (attempt > 0) {
			if ((x = fm_sdn_replay(r->conn, err)) < 0)
				return x;
		}
		x = 0;
		for (size_t i = 0; i < n && x == 0; i++)
			x = fm_sdn_flow(r->conn, &f[i], err);
		if (x != -ECONNRESET && x != -EPIPE)
			return x;
		fm_warn(FM_C_SDN, "The switch at %s went away (%s): reconnecting and replaying our flows", r->sdn, err->msg);
	}
	return x;
}

int fm_redirector_point(fm_redirector *r, const char *ip, const char *mac, const char *iface, uint16_t hold_s,
			double *ms, fm_error *err)
{
	uint8_t m[6];
	int64_t port;
	fm_of_flow f[2];
	int x;
	if (parse_mac(mac, m) < 0)
		return fm_error_set(err, -EINVAL, "not a MAC address: %s", mac ? mac : "(none)");
	if ((x = fm_redirector_port(r, iface, &port, err)) < 0)
		return x;
	if ((x = flows_of(ip, m, (uint32_t)port, f, err)) < 0)
		return x;
	f[0].hard_timeout = f[1].hard_timeout = hold_s;
	int64_t t0 = fm_now_mono_us();
	pthread_mutex_lock(&r->lock);
	x = send_locked(r, f, 2, err);
	pthread_mutex_unlock(&r->lock);
	if (ms)
		*ms = (double)(fm_now_mono_us() - t0) / 1000.0;
	return x;
}

int fm_redirector_release(fm_redirector *r, const char *ip, fm_error *err)
{
	fm_of_flow f[2];
	int x;
	if ((x = flows_of(ip, NULL, 0, f, err)) < 0)
		return x;
	fm_of_flow d;
	fm_of_flow_init(&d, FM_OFPFC_DELETE);
	d.table_id = 0xff; /* every table */
	d.cookie = f[0].cookie;
	d.cookie_mask = ~(uint64_t)0xff; /* both of the address's */
	pthread_mutex_lock(&r->lock);
	x = send_locked(r, &d, 1, err);
	pthread_mutex_unlock(&r->lock);
	return x;
}

bool fm_redirector_holds(fm_redirector *r, const char *ip)
{
	fm_of_flow f[2];
	bool held;
	if (flows_of(ip, NULL, 0, f, NULL) < 0)
		return false;
	pthread_mutex_lock(&r->lock);
	held = r->conn && fm_sdn_holds(r->conn, f[0].cookie, ~(uint64_t)0xff);
	pthread_mutex_unlock(&r->lock);
	return held;
}

int fm_redirector_ready(fm_redirector *r, fm_error *err)
{
	int x;
	pthread_mutex_lock(&r->lock);
	if (!r->conn)
		x = fm_sdn_connect(r->sdn, REDIRECT_TIMEOUT_MS, &r->conn, err);
	else if ((x = fm_sdn_barrier(r->conn, err)) == -ECONNRESET || x == -ETIMEDOUT)
		x = fm_sdn_replay(r->conn, err);
	pthread_mutex_unlock(&r->lock);
	return x;
}
