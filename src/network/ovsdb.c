#include "network/ovsdb.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/dial.h"
#include "basic/util.h"

int fm_ovsdb_ports(const char *db, int timeout_ms, fm_ovs_port **out, size_t *n, fm_error *err)
{
	int64_t deadline = fm_now_mono_ms() + timeout_ms;
	_cleanup_close_ int fd = fm_dial(db, deadline, err);
	_cleanup_free_ char *buf = NULL, *txt = NULL;
	json_t *rep = NULL;
	size_t len = 0, cap = 0;
	int r;

	*out = NULL;
	*n = 0;
	if (fd < 0) {
		fm_error_prefix(err, "Open vSwitch's database");
		return fd;
	}
	json_t *req = json_pack("{s:s, s:[s, {s:s, s:s, s:[], s:[s, s, s]}], s:i}", "method", "transact", "params",
				"Open_vSwitch", "op", "select", "table", "Interface", "where", "columns", "name", "ofport",
				"mac_in_use", "id", 1);
	txt = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	for (size_t off = 0, tl = strlen(txt); off < tl;) {
		ssize_t w = send(fd, txt + off, tl - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			if ((r = fm_wait_fd(fd, POLLOUT, deadline)) < 0)
				return fm_error_set(err, r, "Open vSwitch's database at %s takes no request", db);
			continue;
		}
		if (w < 0)
			return fm_error_set(err, -errno, "Open vSwitch's database at %s: %m", db);
		off += (size_t)w;
	}
	/* the reply is one JSON value, not framed: read until it parses */
	while (!rep) {
		if (len + 65536 + 1 > cap) {
			if (cap >= FM_OVSDB_REPLY_MAX)
				return fm_error_set(err, -EMSGSIZE, "Open vSwitch's database at %s answered more than %d bytes",
						    db, FM_OVSDB_REPLY_MAX);
			cap = cap ? cap * 2 : 65536 * 2;
			char *nb = realloc(buf, cap);
			if (!nb)
				abort();
			buf = nb;
		}
		if ((r = fm_wait_fd(fd, POLLIN, deadline)) < 0)
			return fm_error_set(err, r, "Open vSwitch's database at %s did not answer within %d ms", db, timeout_ms);
		ssize_t k = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
		if (k == 0)
			return fm_error_set(err, -ECONNRESET, "Open vSwitch's database at %s closed the connection", db);
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return fm_error_set(err, -errno, "Open vSwitch's database at %s: %m", db);
		}
		len += (size_t)k;
		json_error_t je;
		rep = json_loadb(buf, len, JSON_DISABLE_EOF_CHECK, &je);
		if (!rep && buf[0] != '{') /* a JSON-RPC reply is an object */
			return fm_error_set(err, -EBADMSG, "Open vSwitch's database at %s answered something that is not "
					    "JSON-RPC", db);
	}
	json_t *res = json_array_get(json_object_get(rep, "result"), 0);
	json_t *rows = json_object_get(res, "rows");
	if (!json_is_array(rows)) {
		json_t *e = json_object_get(rep, "error");
		const char *why = json_string_value(json_object_get(res, "details")) ?: json_string_value(e) ?: "no rows";
		r = fm_error_set(err, -EPROTO, "Open vSwitch's database at %s: %s", db, why);
		json_decref(rep);
		return r;
	}
	size_t i;
	json_t *row;
	*out = fm_xcalloc(json_array_size(rows) + 1, sizeof(**out));
	json_array_foreach(rows, i, row) {
		fm_ovs_port *p = &(*out)[(*n)++];
		snprintf(p->name, sizeof(p->name), "%s", json_string_value(json_object_get(row, "name")) ?: "");
		/* an unset ofport is an empty set, ["set", []] */
		json_t *of = json_object_get(row, "ofport");
		p->ofport = json_is_integer(of) ? json_integer_value(of) : -1;
		const char *mac = json_string_value(json_object_get(row, "mac_in_use"));
		snprintf(p->mac, sizeof(p->mac), "%s", mac && strlen(mac) == 17 ? mac : "");
	}
	json_decref(rep);
	return 0;
}

int fm_ovsdb_port(const char *db, const char *iface, int timeout_ms, fm_ovs_port *out, fm_error *err)
{
	fm_ovs_port *ports;
	size_t n;
	int r = fm_ovsdb_ports(db, timeout_ms, &ports, &n, err);
	if (r < 0)
		return r;
	r = fm_error_set(err, -ENOENT, "the switch has no interface %s", iface);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ports[i].name, iface)) {
			*out = ports[i];
			fm_error_clear(err);
			r = 0;
			break;
		}
	free(ports);
	return r;
}
