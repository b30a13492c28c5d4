/* State Restoration Module: brings a checkpointed container back to life on this
 * host with `runc restore` (CRIU underneath), into a bundle and root filesystem the
 * Runtime Controller prepared. */
#include <errno.h>
#include <string.h>

#include "basic/cmd.h"
#include "basic/util.h"
#include "runtime/tmpfs.h"
#include "sync/checkpoint.h"


/* The restore's CRIU configuration: the host's, the fresh tmpfs mounts the
 * images ask for (runtime/tmpfs.h), mounted below the container's directory
 * in *tdir (*tmpfs: there are some), and tcp-close when the container's TCP
 * connections are to be restored closed (runc restore has no flag for it).
 * *conf NULL: the host's configuration as it is. */
static int restore_conf(fm_runtime *rt, const char *images_dir, const char *work_dir, const char *tdir,
			fm_tcp_mode tcp, char **conf, bool *tmpfs, fm_error *err)
{
	_cleanup_free_ char *lines = NULL;
	int r;

	*conf = NULL;
	if ((r = fm_tmpfs_prepare(images_dir, tdir, &lines, err)) < 0)
		return r;
	*tmpfs = lines != NULL;
	if (!lines && tcp != FM_TCP_CLOSE)
		return 0;
	_cleanup_free_ char *path = fm_xasprintf("%s/criu-restore.conf", work_dir);
	_cleanup_free_ char *text = fm_xasprintf("%s%s%s", rt->criu_restore_text, lines ? lines : "",
						 tcp == FM_TCP_CLOSE ? "tcp-close\n" : "");
	if ((r = fm_write_file_atomic(path, text, strlen(text), 0600)) < 0) {
		if (*tmpfs)
			fm_tmpfs_release(tdir);
		return fm_error_set(err, r, "cannot write %s: %s", path, strerror(-r));
	}
	*conf = fm_xstrdup(path);
	return 0;
}

int fm_restore(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir, bool lazy,
	       fm_tcp_mode tcp, fm_error *err)
{
	_cleanup_free_ char *bundle = fm_rt_container_dir(rt, name);
	_cleanup_free_ char *tdir = fm_xasprintf("%s/tmpfs", bundle), *conf = NULL;
	bool tmpfs = false;
	int r;

	if ((r = restore_conf(rt, images_dir, work_dir, tdir, tcp, &conf, &tmpfs, err)) < 0) {
		fm_error_prefix(err, "restore of %s", name);
		return r;
	}
	struct fm_cmd *c = fm_rt_runc_restore_cmd(rt, conf);

	fm_cmd_arg(c, "--detach");
	if (lazy)
		fm_cmd_arg(c, "--lazy-pages");
	if (tcp == FM_TCP_ESTABLISHED)
		fm_cmd_arg(c, "--tcp-established");
	fm_cmd_arg(c, "--image-path");
	fm_cmd_arg(c, images_dir);
	fm_cmd_arg(c, "--work-path");
	fm_cmd_arg(c, work_dir);
	fm_cmd_arg(c, "--bundle");
	fm_cmd_arg(c, bundle);
	fm_cmd_arg(c, name);
	fm_cmd_set_stdio_null(c);
	r = fm_ckpt_run(c, work_dir, "restore.log", "restore", name, err);
	/* the restored container holds its own binds of them */
	if (tmpfs)
		fm_tmpfs_release(tdir);
	return r;
}
