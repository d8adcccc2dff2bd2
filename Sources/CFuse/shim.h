// libfuse3 is used only to mount and unmount (fusermount3 semantics, option
// parsing); the kernel protocol itself is spoken in Swift (HearthFUSE).
#ifndef HEARTH_CFUSE_SHIM_H
#define HEARTH_CFUSE_SHIM_H
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>
#endif
