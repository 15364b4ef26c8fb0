#ifndef PRODREADY_SHIMS_H
#define PRODREADY_SHIMS_H

#include <spawn.h>

/// Adds a spawn action that closes every descriptor >= `lowest` in the child, atomically with the spawn
/// (glibc's posix_spawn_file_actions_addclosefrom_np, a GNU extension Swift's Glibc module does not import).
/// Returns 0 or an errno value.
int prodready_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int lowest);

#endif
