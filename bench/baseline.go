package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// buildBaseline builds the ambassadord of git revision rev of the
// repository at repo ("" for the working directory's), as `make build` does (static, -trimpath,
// stripped, stamped), into dir, and returns the binary and what it is for
// the notes, such as "bin/ambassadord of 3f2a1bc (HEAD~1)".
//
// The revision's tree is exported with `git archive` into a temporary
// directory, built there and removed: nothing of the working tree, its
// index or its worktree list is touched, so the bench can run while others
// commit in the same repository. The module cache is shared, so a
// revision with the same dependencies builds in seconds.
func buildBaseline(ctx context.Context, repo, rev, dir string) (bin, what string, err error) {
	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = "go"
	}
	revParse := exec.CommandContext(ctx, "git", "rev-parse", "--short", rev+"^{commit}")
	revParse.Dir = repo
	out, err := revParse.Output()
	if err != nil {
		return "", "", fmt.Errorf("baseline: git rev-parse %s: %w", rev, exitDetail(err))
	}
	commit := strings.TrimSpace(string(out))
	src, err := os.MkdirTemp("", "ambassadord-baseline-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(src)
	if err := exportTree(ctx, repo, commit, src); err != nil {
		return "", "", fmt.Errorf("baseline %s: %w", rev, err)
	}
	bin = filepath.Join(dir, "ambassadord-baseline")
	ldflags := fmt.Sprintf("-s -w -X main.version=baseline-%s -X main.commit=%s", commit, commit)
	build := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "./cmd/ambassadord")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("baseline %s: go build: %w\n%s", rev, err, b)
	}
	what = "bin/ambassadord of " + commit
	if rev != commit {
		what += " (" + rev + ")"
	}
	fmt.Fprintf(os.Stderr, "bench: baseline: built %s\n", what)
	return bin, what, nil
}

// exportTree writes the tree of commit of repo into dir: git archive piped
// into tar.
func exportTree(ctx context.Context, repo, commit, dir string) error {
	archive := exec.CommandContext(ctx, "git", "archive", "--format=tar", commit)
	archive.Dir = repo
	extract := exec.CommandContext(ctx, "tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	extract.Stdin = pipe
	var archiveErr, extractErr strings.Builder
	archive.Stderr, extract.Stderr = &archiveErr, &extractErr
	if err := extract.Start(); err != nil {
		return fmt.Errorf("tar: %w", err)
	}
	if err := archive.Run(); err != nil {
		extract.Wait()
		return fmt.Errorf("git archive: %w: %s", err, archiveErr.String())
	}
	if err := extract.Wait(); err != nil {
		return fmt.Errorf("tar: %w: %s", err, extractErr.String())
	}
	return nil
}

// exitDetail adds a failed command's stderr to its error.
func exitDetail(err error) error {
	if exit, ok := err.(*exec.ExitError); ok && len(exit.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(exit.Stderr)))
	}
	return err
}
