package resolver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxWeight is the largest ambassador.weight; larger values are clipped
// to it (the proxy's MaxWeight, which the resolver cannot import).
const maxWeight = 100

// parseWeight parses the value of the ambassador.weight label: an integer
// from 1; above maxWeight it is clipped, with a note saying so.
func parseWeight(s string) (w int, note string, err error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	switch {
	case err != nil:
		return 1, "", errors.New("not an integer")
	case n < 1:
		return 1, "", errors.New("below 1")
	case n > maxWeight:
		return maxWeight, fmt.Sprintf("clipped to %d", maxWeight), nil
	}
	return n, "", nil
}

// The values of the ambassador.balance label and of Route.Balance.
const (
	BalanceRoundRobin = "round-robin"
	BalanceLeastConn  = "least-conn"
)
