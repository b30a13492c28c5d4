/* State Restoration Module: brings a checkpointed container back to life on this
 * host with `runc restore` (CRIU underneath), into a bundle and root filesystem the
 * Runtime Controller prepared. */
#include <errno.h>

#include "basic/cmd.h"
#include "basic/util.h"
#include "sync/checkpoint.h"


int fm_restore(fm_runtime *rt, const char *name, const char *images_dir, const char *work_dir, bool lazy,
	       bool tcp, fm_error *err)
{
	_cleanup_free_ char *bundle = fm_rt_container_dir(rt, name);
	struct fm_cmd *c = fm_rt_runc_restore_cmd(rt);

	fm_cmd_arg(c, "--detach");
	if (lazy)
		fm_cmd_arg(c, "--lazy-pages");
	if (tcp)
		fm_cmd_arg(c, "--tcp-established");
	fm_cmd_arg(c, "--image-path");
	fm_cmd_arg(c, images_dir);
	fm_cmd_arg(c, "--work-path");
	fm_cmd_arg(c, work_dir);
	fm_cmd_arg(c, "--bundle");
	fm_cmd_arg(c, bundle);
	fm_cmd_arg(c, name);
	fm_cmd_set_stdio_null(c);
	return fm_ckpt_run(c, work_dir, "restore.log", "restore", name, err);
}
