#include "network/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include "network/ldns_dl.h"
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "basic/util.h"

/* "name" -> "name." */
static void fqdn(char *out, size_t len, const char *name)
{
	size_t n = strlen(name);
	snprintf(out, len, "%s%s", name, n && name[n - 1] == '.' ? "" : ".");
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253)
		return false;
	for (const char *p = s; *p; p++)
		if (!(*p == '.' || *p == '-' || *p == '_' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= 'A' && *p <= 'Z')))
			return false;
	return true;
}

/* The key file's text, wiped before it is freed, on every path out. */
typedef struct {
	char *p;
	size_t len;
} key_text;

static void key_text_wipe(key_text *k)
{
	if (k->p)
		explicit_bzero(k->p, k->len);
	free(k->p);
}

int fm_dns_open(const char *server, const char *keyfile, int timeout_ms, fm_dns *d, fm_error *err)
{
	char host[64];
	int port = 53;
	struct stat st;
	__attribute__((cleanup(key_text_wipe))) key_text kt = { NULL, 0 };
	int r;

	memset(d, 0, sizeof(*d));
	d->timeout_ms = timeout_ms > 0 ? timeout_ms : FM_DNS_TIMEOUT_MS;
	if (strchr(server, ':') && server[0] != '[' && strchr(server, ':') == strrchr(server, ':')) {
		if (fm_split_hostport(server, host, sizeof(host), &port) < 0 || port == 0)
			return fm_error_set(err, -EINVAL, "DNS server %s: use ADDR or ADDR:PORT", server);
	} else if (server[0] == '[') {
		if (fm_split_hostport(server, host, sizeof(host), &port) < 0 || port == 0)
			return fm_error_set(err, -EINVAL, "DNS server %s: use [ADDR]:PORT", server);
	} else {
		snprintf(host, sizeof(host), "%s", server);
	}
	unsigned char a[16];
	if (inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1)
		return fm_error_set(err, -EINVAL, "DNS server %s: give its address, not a name", server);
	snprintf(d->server, sizeof(d->server), "%s", host);
	d->port = (uint16_t)port;
	/* the key: root's alone */
	if (stat(keyfile, &st) < 0)
		return fm_error_set(err, -errno, "TSIG key file %s: %m", keyfile);
	if (st.st_uid != 0 || (st.st_mode & 077))
		return fm_error_set(err, -EPERM, "TSIG key file %s must belong to root and be readable by nobody else "
				    "(chmod 600; it is mode %o, owner %u)", keyfile, (unsigned)(st.st_mode & 07777),
				    (unsigned)st.st_uid);
	if ((r = fm_read_file(keyfile, 4096, &kt.p, &kt.len)) < 0)
		return fm_error_set(err, r, "TSIG key file %s: %s", keyfile, strerror(-r));
	char *text = kt.p;
	text[strcspn(text, "\r\n")] = '\0';
	char *c1 = strchr(text, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	if (!c1 || !c2 || c1 == text || c2 == c1 + 1 || !c2[1])
		return fm_error_set(err, -EINVAL, "TSIG key file %s: expected one line ALGORITHM:NAME:SECRET "
				    "(e.g. hmac-sha256:mig-key:BASE64)", keyfile);
	*c1 = *c2 = '\0';
	if (strncmp(text, "hmac-", 5) != 0 || !name_ok(c1 + 1) || strlen(c2 + 1) >= sizeof(d->secret) ||
	    strspn(c2 + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != strlen(c2 + 1))
		return fm_error_set(err, -EINVAL, "TSIG key file %s: an hmac-* algorithm, a key name and a base64 "
				    "secret are expected", keyfile);
	fqdn(d->algorithm, sizeof(d->algorithm), text);
	fqdn(d->keyname, sizeof(d->keyname), c1 + 1);
	snprintf(d->secret, sizeof(d->secret), "%s", c2 + 1);
	/* libldns from now on, for as long as the daemon lives: loaded by a
	 * daemon that has a DNS server to update, not carried by every one */
	if ((r = fm_ldns_acquire(err)) < 0)
		explicit_bzero(d->secret, sizeof(d->secret));
	return r;
}

static ldns_resolver *resolver(const fm_dns *d, bool signed_, fm_error *err)
{
	ldns_resolver *r = ldns_resolver_new();
	ldns_rdf *ns = ldns_rdf_new_frm_str(strchr(d->server, ':') ? LDNS_RDF_TYPE_AAAA : LDNS_RDF_TYPE_A, d->server);
	if (!r || !ns || ldns_resolver_push_nameserver(r, ns) != LDNS_STATUS_OK) {
		if (ns)
			ldns_rdf_deep_free(ns);
		if (r)
			ldns_resolver_deep_free(r);
		fm_error_set(err, -ENOMEM, "cannot set up a DNS resolver for %s", d->server);
		return NULL;
	}
	ldns_rdf_deep_free(ns); /* pushed as a copy */
	ldns_resolver_set_port(r, d->port);
	ldns_resolver_set_usevc(r, false);
	ldns_resolver_set_retry(r, 1);
	ldns_resolver_set_recursive(r, false);
	struct timeval tv = { d->timeout_ms / 1000, (d->timeout_ms % 1000) * 1000 };
	ldns_resolver_set_timeout(r, tv);
	if (signed_) {
		/* (a NULL key name crashes ldns 1.8.3: an unsigned resolver is a second one) */
		ldns_resolver_set_tsig_keyname(r, d->keyname);
		ldns_resolver_set_tsig_algorithm(r, d->algorithm);
		ldns_resolver_set_tsig_keydata(r, d->secret);
	}
	return r;
}

static int status_error(const fm_dns *d, ldns_status st, const char *what, fm_error *err)
{
	if (st == LDNS_STATUS_NETWORK_ERR || st == LDNS_STATUS_RES_NO_NS)
		return fm_error_set(err, -ETIMEDOUT, "the DNS server at %s:%u did not answer %s within %d ms", d->server,
				    d->port, what, d->timeout_ms);
	if (st == LDNS_STATUS_CRYPTO_TSIG_BOGUS || st == LDNS_STATUS_CRYPTO_TSIG_ERR)
		return fm_error_set(err, -EBADMSG, "the DNS server at %s:%u answered %s without a valid signature "
				    "(a wrong key?)", d->server, d->port, what);
	return fm_error_set(err, -EIO, "the DNS server at %s:%u, %s: %s", d->server, d->port, what,
			    ldns_get_errorstr_by_id(st));
}

int fm_dns_lookup(const fm_dns *d, const char *name, char *ip, size_t iplen, uint32_t *ttl, fm_error *err)
{
	char fq[260];
	int r = -ENOENT;
	if (!name_ok(name))
		return fm_error_set(err, -EINVAL, "not a DNS name: %.64s", name);
	fqdn(fq, sizeof(fq), name);
	ldns_resolver *res = resolver(d, false, err);
	if (!res)
		return -ENOMEM;
	ldns_rdf *qn = ldns_dname_new_frm_str(fq);
	ldns_pkt *q = NULL;
	ldns_status st = ldns_resolver_query_status(&q, res, qn, LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, 0);
	if (st != LDNS_STATUS_OK || !q) {
		r = status_error(d, st, "a query", err);
	} else {
		ldns_rr_list *a = ldns_pkt_rr_list_by_type(q, LDNS_RR_TYPE_A, LDNS_SECTION_ANSWER);
		if (a && ldns_rr_list_rr_count(a) > 0) {
			ldns_rr *rr = ldns_rr_list_rr(a, 0);
			char *s = ldns_rdf2str(ldns_rr_rdf(rr, 0));
			snprintf(ip, iplen, "%s", s ? s : "");
			free(s);
			*ttl = ldns_rr_ttl(rr);
			r = 0;
		} else {
			ldns_lookup_table *lt = ldns_lookup_by_id(ldns_rcodes, (int)ldns_pkt_get_rcode(q));
			r = fm_error_set(err, -ENOENT, "%s has no A record on %s:%u (%s%s)", fq, d->server, d->port,
					 lt ? lt->name : "?", ldns_pkt_aa(q) ? "" : ", and the answer is not authoritative");
		}
		ldns_rr_list_deep_free(a);
	}
	ldns_pkt_free(q);
	ldns_rdf_deep_free(qn);
	ldns_resolver_deep_free(res);
	return r;
}

int fm_dns_set(const fm_dns *d, const char *zone, const char *name, const char *ip, uint32_t ttl, double *ms,
	       fm_error *err)
{
	char fq[260], fz[260], line[600];
	struct in_addr a4;
	int r;
	if (!name_ok(name) || !name_ok(zone))
		return fm_error_set(err, -EINVAL, "not a DNS name: %.64s", !name_ok(name) ? name : zone);
	if (inet_pton(AF_INET, ip, &a4) != 1)
		return fm_error_set(err, -EINVAL, "not an IPv4 address: %.64s", ip);
	fqdn(fq, sizeof(fq), name);
	fqdn(fz, sizeof(fz), zone);
	ldns_resolver *res = resolver(d, true, err);
	if (!res)
		return -ENOMEM;
	/* update section: delete the A RRset (class ANY, TTL 0, no data), add the new one */
	ldns_rr_list *up = ldns_rr_list_new();
	ldns_rr *del = ldns_rr_new();
	ldns_rr_set_owner(del, ldns_dname_new_frm_str(fq));
	ldns_rr_set_type(del, LDNS_RR_TYPE_A);
	ldns_rr_set_class(del, LDNS_RR_CLASS_ANY);
	ldns_rr_set_ttl(del, 0);
	ldns_rr_list_push_rr(up, del);
	ldns_rr *add = NULL;
	snprintf(line, sizeof(line), "%s %u IN A %s", fq, ttl, ip);
	if (ldns_rr_new_frm_str(&add, line, 0, NULL, NULL) != LDNS_STATUS_OK) {
		ldns_rr_list_deep_free(up);
		ldns_resolver_deep_free(res);
		return fm_error_set(err, -EINVAL, "cannot build the record %s", line);
	}
	ldns_rr_list_push_rr(up, add);
	ldns_pkt *p = ldns_update_pkt_new(ldns_dname_new_frm_str(fz), LDNS_RR_CLASS_IN, NULL, up, NULL);
	ldns_pkt_set_random_id(p);
	ldns_status st = ldns_update_pkt_tsig_add(p, res);
	ldns_pkt *ans = NULL;
	int64_t t0 = fm_now_mono_us();
	if (st == LDNS_STATUS_OK)
		st = ldns_resolver_send_pkt(&ans, res, p); /* checks the answer's signature */
	if (ms)
		*ms = (double)(fm_now_mono_us() - t0) / 1000.0;
	if (st != LDNS_STATUS_OK || !ans) {
		r = status_error(d, st, "the update", err);
	} else if (ldns_pkt_get_rcode(ans) != LDNS_RCODE_NOERROR) {
		ldns_lookup_table *lt = ldns_lookup_by_id(ldns_rcodes, (int)ldns_pkt_get_rcode(ans));
		const char *rc = lt ? lt->name : "?";
		r = fm_error_set(err, -EPERM, "the DNS server at %s:%u refused the update of %s: %s%s", d->server, d->port,
				 fq, rc, !strcmp(rc, "NOTAUTH") ? " (the key is not accepted for the zone)" : "");
	} else {
		r = 0;
	}
	ldns_pkt_free(ans);
	ldns_pkt_free(p);
	ldns_resolver_deep_free(res);
	return r;
}
