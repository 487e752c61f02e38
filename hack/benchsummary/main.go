// Command benchsummary reads `go test -bench` output on stdin and prints one Markdown
// table: every benchmark with ns/op, allocs/op and its custom metrics (ratios against
// the baselines measured in the same run).
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

var line = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	pkg := ""
	fmt.Println("| package | benchmark | results |")
	fmt.Println("|---|---|---|")
	for sc.Scan() {
		text := sc.Text()
		if strings.HasPrefix(text, "pkg: ") {
			pkg = strings.TrimPrefix(text, "pkg: github.com/fleetcache/fleetcache/")
			continue
		}
		m := line.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		fields := strings.Fields(m[4])
		var parts []string
		for i := 0; i+1 < len(fields); i += 2 {
			parts = append(parts, fields[i]+" "+fields[i+1])
		}
		fmt.Printf("| %s | %s | %s |\n", pkg, strings.TrimPrefix(m[1], "Benchmark"), strings.Join(parts, ", "))
	}
}
