//go:build unix

package tlsconf

import (
	"io/fs"
	"syscall"
)

// inode is a file's inode number: a file replaced by another (a rename
// over it) has a new one, whatever its size and time.
func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}

// owner is a file's owner and group, for an error that says who may read
// it.
func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid), true
	}
	return 0, 0, false
}
