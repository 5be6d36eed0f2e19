package resolver

import (
	"errors"
	"fmt"
	"strings"
)

// LabelComposeProject is the label docker compose puts on every container of
// a project.
const LabelComposeProject = "com.docker.compose.project"

// ClaimScope limits which containers may claim a target with the label
// ambassador.target. A claim attracts new connections, so on an engine
// shared by several teams or projects, a container that should not receive
// a route's traffic must not be able to claim it. Whatever the scope, a
// claimer must be reachable on a network it shares with the ambassador, and
// the container named like the target still counts by its name.
//
// The zero value is the default scope: every reachable container.
type ClaimScope struct {
	// Project admits only the containers of the ambassador's own compose
	// project (label com.docker.compose.project).
	Project bool
	// Label admits only the containers carrying it: "KEY", with any value,
	// or "KEY=VALUE".
	Label string
}

// ParseClaimScope parses the --claim-scope flag: "network" (or empty),
// "project", or "label:KEY" / "label:KEY=VALUE".
func ParseClaimScope(s string) (ClaimScope, error) {
	switch s = strings.TrimSpace(s); {
	case s == "" || s == "network":
		return ClaimScope{}, nil
	case s == "project":
		return ClaimScope{Project: true}, nil
	case strings.HasPrefix(s, "label:"):
		label := strings.TrimPrefix(s, "label:")
		if key, _, _ := strings.Cut(label, "="); strings.TrimSpace(key) == "" || key != strings.TrimSpace(key) {
			return ClaimScope{}, fmt.Errorf("claim scope %q: want label:KEY or label:KEY=VALUE", s)
		}
		return ClaimScope{Label: label}, nil
	}
	return ClaimScope{}, errors.New(`claim scope ` + fmt.Sprintf("%q", s) + `: want network, project, label:KEY or label:KEY=VALUE`)
}

// String returns the scope in the syntax ParseClaimScope reads.
func (s ClaimScope) String() string {
	switch {
	case s.Project:
		return "project"
	case s.Label != "":
		return "label:" + s.Label
	}
	return "network"
}

// admits says whether c may claim a target, and if not, why. self is the
// ambassador's container, nil when unknown.
func (s ClaimScope) admits(c, self *Container) (bool, string) {
	switch {
	case s.Project:
		project := ""
		if self != nil {
			project = self.Labels[LabelComposeProject]
		}
		if project == "" {
			return false, "claim scope project, but the ambassador belongs to no compose project"
		}
		if c.Labels[LabelComposeProject] != project {
			return false, fmt.Sprintf("outside the claim scope: not in compose project %s", project)
		}
	case s.Label != "":
		key, value, hasValue := strings.Cut(s.Label, "=")
		got, ok := c.Labels[key]
		if !ok || hasValue && got != value {
			return false, fmt.Sprintf("outside the claim scope: no label %s", s.Label)
		}
	}
	return true, ""
}
