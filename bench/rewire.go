package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// rewireResult is what e2e/cmd/rewirebench prints as JSON; the two
// definitions must agree.
type rewireResult struct {
	ImageBytes int64        `json:"image_bytes"`
	Kinds      []rewireKind `json:"kinds"`
	Skipped    string       `json:"skipped,omitempty"` // why nothing was measured
}

// rewireKind is one way of moving new connections to a new backend.
type rewireKind struct {
	Name     string  `json:"name"`   // row label
	Column   string  `json:"column"` // "ambassadord" or "classic"
	Rewires  int     `json:"rewires"`
	MedianMS float64 `json:"median_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	// OwnMedianMS and OwnP99MS run from when the new backend listened,
	// when that was after the change: the ambassador's own part.
	OwnMedianMS float64 `json:"own_median_ms"`
	OwnP99MS    float64 `json:"own_p99_ms"`
	Attempts    int     `json:"attempts"` // fresh connections made during the rewires
	Failed      int     `json:"failed"`
	// FailedInStop are the failures of attempts made while the old
	// backend was being stopped, included in Failed.
	FailedInStop int    `json:"failed_in_stop"`
	Established  string `json:"established"` // what happened to established connections
}

// runRewire builds and runs e2e/cmd/rewirebench, which drives the Docker
// engine, and keeps its result for the table.
func (b *bench) runRewire(ctx context.Context, dir string) error {
	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = "go"
	}
	bin := filepath.Join(dir, "rewirebench")
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./e2e/cmd/rewirebench")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build rewirebench: %w: %s", err, out)
	}
	cmd := exec.CommandContext(ctx, bin, "-rewires", strconv.Itoa(b.cfg.rewires))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("rewirebench: %w", err)
	}
	var res rewireResult
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("parse rewirebench output: %w", err)
	}
	if res.Skipped != "" {
		return fmt.Errorf("%s", res.Skipped)
	}
	b.rewire = &res
	return nil
}

// printRewire adds the rewire and image rows.
func (b *bench) printRewire(w io.Writer) {
	if b.rewire == nil {
		return
	}
	for _, k := range b.rewire.Kinds {
		cell := fmt.Sprintf("median %.1f ms, p99 %.1f ms (max %.1f) over %d; from when the new backend listened: median %.1f ms, p99 %.1f ms; failed %d of %d fresh connections",
			k.MedianMS, k.P99MS, k.MaxMS, k.Rewires, k.OwnMedianMS, k.OwnP99MS, k.Failed, k.Attempts)
		if k.FailedInStop > 0 {
			cell += fmt.Sprintf(" (%d made while the old backend stopped)", k.FailedInStop)
		}
		cell += "; established: " + k.Established
		cells := []string{k.Name, "—", "—", "—", "—", "", ""}
		if k.Column == "classic" {
			cells[2] = cell
		} else {
			cells[4] = cell
			cells[6] = mark(k.P99MS <= 50 && k.Failed == 0) + " p99 ≤ 50 ms, zero failed; " +
				mark(k.OwnP99MS <= 50) + " p99 ≤ 50 ms from the new backend listening"
		}
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	mb := float64(b.rewire.ImageBytes) / 1e6
	fmt.Fprintf(w, "| image size, MB (repository Dockerfile) | — | — | — | %.1f | | %s ≤15 MB |\n", mb, mark(mb <= 15))
}
