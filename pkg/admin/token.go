package admin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
)

// maxTokenBytes bounds what readToken reads: a token is a line, not a file.
const maxTokenBytes = 4096

// readToken reads the bearer token of --admin-token-file: the file's
// content with surrounding white space trimmed.
//
// The file must give its group and others no access at all (chmod 600, as
// ssh demands of a private key): whoever reads the token can move a route's
// connections to a host of their choosing, and whoever can write the file
// can choose the token. A Kubernetes secret or Docker secret is mounted
// 0644 or 0444 unless told otherwise; give it mode 0400.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read --admin-token-file: %w (the daemon's user must be able to read it)", err)
	}
	defer f.Close()
	// Stat the open file: what is checked is what is read.
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read --admin-token-file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("read --admin-token-file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("read --admin-token-file %s: mode %04o lets its group or others read or change the token: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read --admin-token-file %s: %w", path, err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("read --admin-token-file %s: longer than %d bytes: it should hold one token", path, maxTokenBytes)
	}
	token := strings.TrimSpace(string(b))
	switch {
	case token == "":
		return "", fmt.Errorf("read --admin-token-file %s: empty: write a random token in it, e.g. (umask 077; head -c 32 /dev/urandom | base64 > %s)", path, path)
	case strings.ContainsFunc(token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "", errors.New("read --admin-token-file " + path + ": the token holds white space or control characters: it should be one word on one line")
	}
	return token, nil
}
