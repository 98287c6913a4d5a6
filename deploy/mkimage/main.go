// Command mkimage builds the stackcopy container image without a container
// daemon and without pulling a base image: an OCI image from scratch with
// one layer holding the two static binaries (CGO_ENABLED=0, so no libc is
// needed), /etc/passwd and /etc/group with a non-root user, and the spill
// directory. It writes an OCI image layout directory, or a `docker save`
// tarball when the output ends in .tar (docker load / podman load).
//
//	go run ./deploy/mkimage -stackcopy bin/stackcopy -intercept bin/intercept -o bin/image.tar
//
// The image's default user is the non-root 65532; the workloads themselves
// need CAP_NET_ADMIN and CAP_NET_RAW in their effective set, which Linux
// gives a non-root process only as ambient capabilities (Kubernetes and
// Docker cannot set them) or file capabilities (void under no_new_privs),
// so deploy/k8s runs them as uid 0 with every other capability dropped.
//
// The build is reproducible: fixed timestamps (SOURCE_DATE_EPOCH, else
// the Unix epoch), a fixed file order, no host paths.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths and ids inside the image.
const (
	binDir   = "/usr/local/bin"
	spillDir = "/var/cache/stackcopy"
	nonRoot  = 65532 // the distroless convention
)

// Options describe one image.
type Options struct {
	Stackcopy, Intercept string    // paths of the static binaries on this host
	Tag                  string    // e.g. stackcopy:v1 (ref name in the layout, repo tag in the tarball)
	Arch                 string    // GOARCH of the binaries
	Created              time.Time // timestamps of the config and every file
}

func main() {
	var o Options
	var out string
	flag.StringVar(&o.Stackcopy, "stackcopy", "bin/stackcopy", "stackcopy binary (static: CGO_ENABLED=0)")
	flag.StringVar(&o.Intercept, "intercept", "bin/intercept", "intercept binary (static: CGO_ENABLED=0)")
	flag.StringVar(&o.Tag, "tag", "stackcopy:dev", "image reference")
	flag.StringVar(&o.Arch, "arch", "amd64", "architecture of the binaries")
	flag.StringVar(&out, "o", "bin/image.tar", "output: a docker-save tarball if it ends in .tar, else an OCI layout directory")
	flag.Parse()
	o.Created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mkimage: SOURCE_DATE_EPOCH %q: %v\n", s, err)
			os.Exit(2)
		}
		o.Created = time.Unix(sec, 0).UTC()
	}
	img, err := Build(o)
	if err == nil {
		err = Write(img, o.Tag, out)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	if st, err := os.Stat(out); err == nil && !st.IsDir() {
		fmt.Printf("mkimage: %s (%s, %d MiB)\n", out, o.Tag, (st.Size()+1<<19)>>20)
	} else {
		fmt.Printf("mkimage: %s (OCI layout, %s)\n", out, o.Tag)
	}
}

// Build assembles the image in memory.
func Build(o Options) (v1.Image, error) {
	layerTar, err := rootfs(o)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.Arch
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint: []string{binDir + "/stackcopy"},
		Cmd:        []string{"--help"},
		User:       strconv.Itoa(nonRoot) + ":" + strconv.Itoa(nonRoot),
		Env:        []string{"PATH=" + binDir + ":/usr/bin:/bin", "TMPDIR=" + spillDir},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "stackcopy",
			"org.opencontainers.image.description": "stackcopy and intercept: copy live TCP traffic to a test server through a userspace TCP stack",
			"org.opencontainers.image.source":      "https://github.com/stackcopy/stackcopy",
		},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// Write stores img as a docker-save tarball (out ends in .tar) or as an
// OCI image layout directory.
func Write(img v1.Image, tag, out string) error {
	if strings.HasSuffix(out, ".tar") {
		ref, err := name.NewTag(tag)
		if err != nil {
			return fmt.Errorf("-tag %q: %w", tag, err)
		}
		if err := tarball.WriteToFile(out, ref, img); err != nil {
			return fmt.Errorf("write %s: %w", out, err)
		}
		return nil
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return fmt.Errorf("layout %s: %w", out, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return fmt.Errorf("layout %s: %w", out, err)
	}
	return nil
}

// rootfs is the layer: directories, the two binaries, passwd and group.
func rootfs(o Options) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dir := func(path string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: o.Created, Format: tar.FormatPAX})
	}
	file := func(path string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: mode, Size: int64(len(data)), ModTime: o.Created, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"etc", "usr", "usr/local", "usr/local/bin", "var", "var/cache"} {
		if err := dir(d, 0o755, 0); err != nil {
			return nil, err
		}
	}
	// /tmp for TMPDIR users; the spill directory owned by the image user
	// (with readOnlyRootFilesystem it is an emptyDir mount instead).
	if err := dir("tmp", 0o1777, 0); err != nil {
		return nil, err
	}
	if err := dir(strings.TrimPrefix(spillDir, "/"), 0o700, nonRoot); err != nil {
		return nil, err
	}
	for _, bin := range []struct{ name, path string }{{"stackcopy", o.Stackcopy}, {"intercept", o.Intercept}} {
		data, err := os.ReadFile(bin.path)
		if err != nil {
			return nil, fmt.Errorf("-%s: %w", bin.name, err)
		}
		if err := checkStatic(bin.path, data); err != nil {
			return nil, err
		}
		if err := file(strings.TrimPrefix(binDir, "/")+"/"+bin.name, 0o755, data); err != nil {
			return nil, err
		}
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/:/sbin/nologin\n", nonRoot, nonRoot)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonRoot)
	if err := file("etc/passwd", 0o644, []byte(passwd)); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte(group)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// checkStatic refuses a dynamically linked binary: the image has no libc
// or loader, so it would fail with a baffling "no such file or directory".
func checkStatic(path string, data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: not an ELF binary: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New(path + " is dynamically linked (it names an ELF interpreter): build it with CGO_ENABLED=0 (make build does)")
		}
	}
	return nil
}
