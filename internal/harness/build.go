package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// BinaryEnv names a prebuilt static ambassadord binary to use instead of
// building ./cmd/ambassadord (for testing a release artefact).
const BinaryEnv = "AMBASSADORD_E2E_BINARY"

// Paths of the Debian redis binaries packed into the redis fixture image;
// RedisCLI is the entrypoint that turns the image into a redis client.
const (
	RedisServer = "/usr/bin/redis-server"
	RedisCLI    = "/usr/bin/redis-cli"
)

// File is one entry of an in-memory build context.
type File struct {
	Name string // slash-separated path inside the context
	Mode int64
	Data []byte
}

// RepoRoot returns the directory holding the module's go.mod, so callers
// work from any package directory.
func RepoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the ambassadord module")
	}
	return filepath.Dir(mod), nil
}

// GoBuild builds package pkg of the module at root into the static binary
// out (CGO_ENABLED=0, so it runs in a FROM-scratch image).
func GoBuild(ctx context.Context, root, pkg, out, ldflags string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// AmbassadorBinary returns the path of a static ambassadord binary: the one
// named by $AMBASSADORD_E2E_BINARY, or else ./cmd/ambassadord built into dir
// with the same flags as `make build`, stamped with version.
func AmbassadorBinary(ctx context.Context, root, dir, version string) (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		return p, nil
	}
	commit := "unknown"
	if out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	out := filepath.Join(dir, "ambassadord")
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s", version, commit)
	return out, GoBuild(ctx, root, "./cmd/ambassadord", out, ldflags)
}

// ImageTag returns this run's tag for an image kind ("" for the
// ambassador): <label>[-kind]:<run>, e.g. ambassadord-e2e-redis:1a2b3c4d.
func (e *Engine) ImageTag(kind string) string {
	repo := e.prefix()
	if kind != "" {
		repo += "-" + kind
	}
	return repo + ":" + e.Run
}

// BuildAmbassadorImage builds the repository's real Dockerfile with binary
// as bin/ambassadord, exactly the context `make image` sends, and returns
// the tag: ImageTag(kind), "" for the binary under test (the benchmark
// builds a "baseline" too).
func (e *Engine) BuildAmbassadorImage(ctx context.Context, kind, root, binary, version string) (string, error) {
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return "", fmt.Errorf("read Dockerfile: %w", err)
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return "", fmt.Errorf("read ambassadord binary: %w", err)
	}
	tag := e.ImageTag(kind)
	return tag, e.BuildImage(ctx, tag, []File{
		{Name: "Dockerfile", Mode: 0o644, Data: dockerfile},
		{Name: "bin/ambassadord", Mode: 0o755, Data: bin},
	}, map[string]string{"VERSION": version})
}

// BuildDataServerImage builds the dataproto fixture server
// (internal/dataserver) statically into dir and packs it FROM scratch,
// listening on 9000. It returns the tag.
func (e *Engine) BuildDataServerImage(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "dataserver")
	if err := GoBuild(ctx, root, "./internal/dataserver", out, "-s -w"); err != nil {
		return "", err
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return "", fmt.Errorf("read dataserver binary: %w", err)
	}
	tag := e.ImageTag("dataserver")
	return tag, e.BuildImage(ctx, tag, []File{
		{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM scratch\nCOPY dataserver /dataserver\nEXPOSE 9000\nENTRYPOINT [\"/dataserver\"]\n")},
		{Name: "dataserver", Mode: 0o755, Data: bin},
	}, nil)
}

// redisDockerfile runs redis-server by default: no persistence, reachable
// from other containers. `--entrypoint /usr/bin/redis-cli` turns the same
// image into a client.
const redisDockerfile = `FROM scratch
COPY rootfs/ /
EXPOSE 6379
ENTRYPOINT ["/usr/bin/redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
`

// nsswitch makes glibc resolve names from /etc/hosts only. Without the file
// glibc asks DNS first, which would send queries for link aliases to the
// host's resolver.
const nsswitch = "hosts: files\n"

// BuildRedisImage packs this machine's Debian redis-server and redis-cli,
// every library ldd lists for them and the dynamic loader, at their
// original paths, into a FROM-scratch image and returns the tag.
func (e *Engine) BuildRedisImage(ctx context.Context) (string, error) {
	files, err := redisRootfs(ctx)
	if err != nil {
		return "", err
	}
	files = append(files,
		File{Name: "Dockerfile", Mode: 0o644, Data: []byte(redisDockerfile)},
		File{Name: "rootfs/etc/nsswitch.conf", Mode: 0o644, Data: []byte(nsswitch)},
	)
	tag := e.ImageTag("redis")
	return tag, e.BuildImage(ctx, tag, files, nil)
}

// redisRootfs collects the redis binaries and their shared libraries under
// rootfs/ (see Rootfs).
func redisRootfs(ctx context.Context) ([]File, error) {
	for _, bin := range []string{RedisServer, RedisCLI} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("redis fixture needs %s (apt-get install redis-server redis-tools): %w", bin, err)
		}
	}
	return Rootfs(ctx, RedisServer, RedisCLI)
}

// Rootfs collects this machine's binaries bins, every library ldd lists for
// them and the dynamic loader, at their original paths under rootfs/ of a
// build context, for a FROM-scratch image whose Dockerfile says
// `COPY rootfs/ /`. Symlinks are stored as the files they point to, under
// the name given or printed by ldd: redis-server in particular is a
// symlink to redis-check-rdb and picks its mode from argv[0], so it must
// keep its own name.
func Rootfs(ctx context.Context, bins ...string) ([]File, error) {
	paths := map[string]bool{}
	for _, bin := range bins {
		paths[bin] = true
		out, err := exec.CommandContext(ctx, "ldd", bin).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", bin, err)
		}
		libs, err := parseLDD(string(out))
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", bin, err)
		}
		for _, l := range libs {
			paths[l] = true
		}
	}
	var files []File
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", p, err)
		}
		files = append(files, File{Name: "rootfs" + p, Mode: int64(fi.Mode().Perm()), Data: data})
	}
	return files, nil
}

// parseLDD extracts absolute library paths from ldd output, covering both
// "libc.so.6 => /lib/.../libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2
// (0x...)"; virtual objects such as linux-vdso.so.1 have no path.
func parseLDD(out string) ([]string, error) {
	var libs []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("library %s not found", f[0])
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

// BuildImage builds files as the build context with the classic builder
// (nothing is pulled: every Dockerfile here starts FROM scratch), tags the
// result and labels it with the run label. Intermediate containers are
// removed even when the build fails.
func (e *Engine) BuildImage(ctx context.Context, tag string, files []File, args map[string]string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, f := range files {
		hdr := &tar.Header{Name: f.Name, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: now, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write build context: %w", err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("write build context: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write build context: %w", err)
	}

	buildArgs := map[string]*string{}
	for k, v := range args {
		buildArgs[k] = &v
	}
	res, err := e.Client.ImageBuild(ctx, &buf, client.ImageBuildOptions{
		Tags:        []string{tag},
		Labels:      e.labels(),
		BuildArgs:   buildArgs,
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer res.Body.Close()

	// The build reports progress and failure in a JSON message stream; keep
	// the output to explain a failure.
	var log strings.Builder
	dec := json.NewDecoder(res.Body)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("build image %s: read progress: %w", tag, err)
		}
		log.WriteString(m.Stream)
		if m.Error != nil {
			return fmt.Errorf("build image %s: %s\n%s", tag, m.Error.Message, log.String())
		}
	}
}
