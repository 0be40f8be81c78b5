/* The agent's files: the run directory's layout and small helpers to write
 * them so that a process killed at any moment leaves either the old or the
 * new content, never a torn file.
 *
 *   <run-dir>/vms/<vm id>/
 *       definition.json   the VM definition as the controller sent it
 *       vmm.json          the configuration given to drover-vmm
 *       state.json        the agent's record of the VM (vmstate.h)
 *       pid               drover-vmm's pid, while one was started
 *       control.sock      drover-vmm's control socket
 *       console.log       the guest's serial console
 *       vmm.log           drover-vmm's stdout and stderr, every run appended
 *   <run-dir>/vms/.<vm id>.deleting   an undefine in progress (removed at start-up)
 *   <state-dir>/host-id   the host's UUID when the configuration names none */
#ifndef DROVER_AGENT_FS_H
#define DROVER_AGENT_FS_H

#include <stddef.h>
#include <sys/types.h>

#define FS_VMS_DIR        "vms"
#define FS_DEFINITION     "definition.json"
#define FS_VMM_CONFIG     "vmm.json"
#define FS_STATE          "state.json"
#define FS_PID            "pid"
#define FS_CONTROL        "control.sock"
#define FS_CONSOLE        "console.log"
#define FS_VMM_LOG        "vmm.log"

#define FS_STRLEN(lit) (sizeof(lit) - 1)

/* Writes data to path through a temporary file in the same directory,
 * fsync, rename. 0 or -errno. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* mkdir -p. 0 or -errno. */
int fs_mkdir_p(const char *path, mode_t mode);
/* rm -rf of a directory tree that the agent made (no symlinks followed).
 * 0 or -errno (0 if it did not exist). */
int fs_remove_tree(const char *path);
/* dir + "/" + name into out; -ENAMETOOLONG if it does not fit. */
int fs_join(char *out, size_t outlen, const char *dir, const char *name);

#endif
