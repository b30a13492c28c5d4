/* State Restoration Module, POST_COPY: the lazy-pages gate.
 *
 * A lazy restore hands each restored task's userfaultfd to `criu lazy-pages`
 * over the UNIX socket lazy-pages.socket in the restore's work directory:
 * CRIU's restore connects to it early (so lazy-pages must listen by then)
 * and sends, per task, its pid (an int; negative for a zombie) and, for a
 * live one, one dummy byte carrying the userfaultfd (SCM_RIGHTS); at the end
 * a 4-byte "restore finished", then it hangs up.
 *
 * Started one after the other, runc's restore waited for lazy-pages' start
 * (~20 ms here, nearly all of it its exec), inside the freeze.  The gate lets
 * them start together: it listens at the restore's socket at once (in
 * restore_work), and passes everything the restore sends on to lazy-pages'
 * own socket (in lazy_work) once lazy-pages says it listens, each file
 * descriptor on the same byte it came with. */
#pragma once
#include "basic/error.h"

typedef struct fm_lazy_gate fm_lazy_gate;

/* Listens at work_dir/lazy-pages.socket, where a lazy restore connects to hand
 * over its userfaultfds (a stale socket there is replaced).  The listening
 * descriptor, or -errno with err filled. */
int fm_lazy_socket_listen(const char *work_dir, fm_error *err);

/* Listens at restore_work/lazy-pages.socket; ready_fd (taken, unless this
 * fails) is lazy-pages' status pipe: one byte once it listens at
 * lazy_work/lazy-pages.socket.  Waits at most timeout_ms for that byte, and
 * for lazy-pages to take what it is sent; the restore may take its time. */
int fm_lazy_gate_start(const char *restore_work, const char *lazy_work, int ready_fd, int timeout_ms,
		       fm_lazy_gate **out, fm_error *err);
/* After a successful restore: waits until everything the restore sent has
 * been passed on and it hung up.  < 0 with the reason if not (lazy-pages
 * never listened: -ETIMEDOUT, or said nothing and exited: -EIO). */
int fm_lazy_gate_finish(fm_lazy_gate *g, fm_error *err);
/* Stops it wherever it is (a failed restore: nothing more will come) and
 * frees it.  NULL is fine. */
void fm_lazy_gate_free(fm_lazy_gate *g);
