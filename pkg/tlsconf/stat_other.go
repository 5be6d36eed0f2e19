//go:build !unix

package tlsconf

import "io/fs"

// inode is zero where files have none: size, time and the symlinks'
// target tell a change there.
func inode(fs.FileInfo) uint64 { return 0 }

// owner is unknown where files have no Unix owner.
func owner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }
