package resolver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ambassadord/ambassadord/pkg/source"
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
func (s ClaimScope) admits(c, self *source.Container) (bool, string) {
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

// Claims says on which routes containers may claim the target by label.
// A route made from a link, or given with --route, names one container:
// like the classic socat ambassador, it follows that container (by name,
// across recreation) and nothing else, unless the operator invites
// claims there too. The route of the ambassador's own ambassador.target
// label exists to be claimed. A target with a dot (db.example.com) is a
// DNS name and is never claimable, whatever Claims says.
//
// The zero value is the default: claims count on the label's route only.
type Claims struct {
	// Links admits claims on routes from links: the classic variables of
	// a link, and the ambassador's own links.
	Links bool
	// Routes admits claims on explicit routes (--route,
	// AMBASSADORD_ROUTES).
	Routes bool
	// NoLabel refuses claims on the route of the ambassador's own
	// ambassador.target label too: it then follows the container named
	// like its target only.
	NoLabel bool
}

// ParseClaims parses the --claims flag: a comma-separated list of label,
// links and routes, or none. An empty value is the default, label.
func ParseClaims(s string) (Claims, error) {
	c := Claims{NoLabel: true}
	s = strings.TrimSpace(s)
	if s == "" {
		return Claims{}, nil
	}
	if s == "none" {
		return c, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(item) {
		case "label":
			c.NoLabel = false
		case "links":
			c.Links = true
		case "routes":
			c.Routes = true
		default:
			return Claims{}, fmt.Errorf("claims %q: %q is not one of label, links, routes (or none alone)", s, item)
		}
	}
	return c, nil
}

// String returns c in the syntax ParseClaims reads.
func (c Claims) String() string {
	var items []string
	if !c.NoLabel {
		items = append(items, "label")
	}
	if c.Links {
		items = append(items, "links")
	}
	if c.Routes {
		items = append(items, "routes")
	}
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ",")
}
