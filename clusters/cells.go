package clusters

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Table cells of built-in kinds are computed once, when an object is stored, from the typed
// object the informer decoded: serving a table then needs neither a decode nor a
// conversion. The columns and the cells are those of the apiserver's own table printer
// (k8s.io/kubernetes/pkg/printers/internalversion, which works on internal types and so
// cannot be imported); TestCellsMatchTheClusters compares them with real apiservers.
//
// Columns that depend on the time of the request (AGE, "3 (5m ago)" restarts, a running
// Job's duration) are stored as a time and rendered when the table is served.

// ColumnAge marks the column rendered from the object's creation time at request time.
const ColumnAge = "Age"

// printer is a kind's table: its columns after Name (Age included, where the apiserver
// puts it), and its cells without Name and Age.
type printer struct {
	columns []metav1.TableColumnDefinition
	cells   func(obj runtime.Object) []string
}

func col(name, typ string, priority int32, desc string) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: typ, Priority: priority, Description: desc}
}

var ageColumn = col(ColumnAge, "string", 0, metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"])

var containersColumns = []metav1.TableColumnDefinition{
	col("Containers", "string", 1, "Names of each container in the template."),
	col("Images", "string", 1, "Images referenced by each container in the template."),
}

var printers = map[schema.GroupKind]printer{
	{Kind: "Pod"}: {
		columns: []metav1.TableColumnDefinition{
			col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
			col("Status", "string", 0, "The aggregate status of the containers in this pod."),
			col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
			ageColumn,
			col("IP", "string", 1, corev1.PodStatus{}.SwaggerDoc()["podIP"]),
			col("Node", "string", 1, corev1.PodSpec{}.SwaggerDoc()["nodeName"]),
			col("Nominated Node", "string", 1, corev1.PodStatus{}.SwaggerDoc()["nominatedNodeName"]),
			col("Readiness Gates", "string", 1, corev1.PodSpec{}.SwaggerDoc()["readinessGates"]),
		},
		cells: func(o runtime.Object) []string { return podCells(o.(*corev1.Pod)) },
	},
	{Group: "apps", Kind: "Deployment"}: {
		columns: append([]metav1.TableColumnDefinition{
			col("Ready", "string", 0, "Number of the pod with ready state"),
			col("Up-to-date", "string", 0, appsv1.DeploymentStatus{}.SwaggerDoc()["updatedReplicas"]),
			col("Available", "string", 0, appsv1.DeploymentStatus{}.SwaggerDoc()["availableReplicas"]),
			ageColumn,
		}, append(containersColumns, col("Selector", "string", 1, appsv1.DeploymentSpec{}.SwaggerDoc()["selector"]))...),
		cells: func(o runtime.Object) []string {
			d := o.(*appsv1.Deployment)
			names, images := containerCells(d.Spec.Template.Spec.Containers)
			sel := "<invalid>"
			if s, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil {
				sel = s.String()
			}
			return []string{fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, ptrOr(d.Spec.Replicas)), num(d.Status.UpdatedReplicas), num(d.Status.AvailableReplicas), names, images, sel}
		},
	},
	{Group: "apps", Kind: "ReplicaSet"}: {
		columns: append([]metav1.TableColumnDefinition{
			col("Desired", "integer", 0, appsv1.ReplicaSetSpec{}.SwaggerDoc()["replicas"]),
			col("Current", "integer", 0, appsv1.ReplicaSetStatus{}.SwaggerDoc()["replicas"]),
			col("Ready", "integer", 0, appsv1.ReplicaSetStatus{}.SwaggerDoc()["readyReplicas"]),
			ageColumn,
		}, append(containersColumns, col("Selector", "string", 1, appsv1.ReplicaSetSpec{}.SwaggerDoc()["selector"]))...),
		cells: func(o runtime.Object) []string {
			r := o.(*appsv1.ReplicaSet)
			names, images := containerCells(r.Spec.Template.Spec.Containers)
			return []string{num(ptrOr(r.Spec.Replicas)), num(r.Status.Replicas), num(r.Status.ReadyReplicas), names, images, metav1.FormatLabelSelector(r.Spec.Selector)}
		},
	},
	{Group: "apps", Kind: "StatefulSet"}: {
		columns: append([]metav1.TableColumnDefinition{col("Ready", "string", 0, "Number of the pod with ready state"), ageColumn}, containersColumns...),
		cells: func(o runtime.Object) []string {
			s := o.(*appsv1.StatefulSet)
			names, images := containerCells(s.Spec.Template.Spec.Containers)
			return []string{fmt.Sprintf("%d/%d", s.Status.ReadyReplicas, ptrOr(s.Spec.Replicas)), names, images}
		},
	},
	{Group: "apps", Kind: "DaemonSet"}: {
		columns: append([]metav1.TableColumnDefinition{
			col("Desired", "integer", 0, appsv1.DaemonSetStatus{}.SwaggerDoc()["desiredNumberScheduled"]),
			col("Current", "integer", 0, appsv1.DaemonSetStatus{}.SwaggerDoc()["currentNumberScheduled"]),
			col("Ready", "integer", 0, appsv1.DaemonSetStatus{}.SwaggerDoc()["numberReady"]),
			col("Up-to-date", "integer", 0, appsv1.DaemonSetStatus{}.SwaggerDoc()["updatedNumberScheduled"]),
			col("Available", "integer", 0, appsv1.DaemonSetStatus{}.SwaggerDoc()["numberAvailable"]),
			col("Node Selector", "string", 0, corev1.PodSpec{}.SwaggerDoc()["nodeSelector"]),
			ageColumn,
		}, append(containersColumns, col("Selector", "string", 1, appsv1.DaemonSetSpec{}.SwaggerDoc()["selector"]))...),
		cells: func(o runtime.Object) []string {
			d := o.(*appsv1.DaemonSet)
			names, images := containerCells(d.Spec.Template.Spec.Containers)
			st := d.Status
			return []string{num(st.DesiredNumberScheduled), num(st.CurrentNumberScheduled), num(st.NumberReady), num(st.UpdatedNumberScheduled), num(st.NumberAvailable),
				labels.FormatLabels(d.Spec.Template.Spec.NodeSelector), names, images, metav1.FormatLabelSelector(d.Spec.Selector)}
		},
	},
	{Kind: "Service"}: {
		columns: []metav1.TableColumnDefinition{
			col("Type", "string", 0, corev1.ServiceSpec{}.SwaggerDoc()["type"]),
			col("Cluster-IP", "string", 0, corev1.ServiceSpec{}.SwaggerDoc()["clusterIP"]),
			col("External-IP", "string", 0, corev1.ServiceSpec{}.SwaggerDoc()["externalIPs"]),
			col("Port(s)", "string", 0, corev1.ServiceSpec{}.SwaggerDoc()["ports"]),
			ageColumn,
			col("Selector", "string", 1, corev1.ServiceSpec{}.SwaggerDoc()["selector"]),
		},
		cells: func(o runtime.Object) []string { return serviceCells(o.(*corev1.Service)) },
	},
	{Kind: "Node"}: {
		columns: []metav1.TableColumnDefinition{
			col("Status", "string", 0, "The status of the node"),
			col("Roles", "string", 0, "The roles of the node"),
			ageColumn,
			col("Version", "string", 0, corev1.NodeSystemInfo{}.SwaggerDoc()["kubeletVersion"]),
			col("Internal-IP", "string", 1, corev1.NodeStatus{}.SwaggerDoc()["addresses"]),
			col("External-IP", "string", 1, corev1.NodeStatus{}.SwaggerDoc()["addresses"]),
			col("OS-Image", "string", 1, corev1.NodeSystemInfo{}.SwaggerDoc()["osImage"]),
			col("Kernel-Version", "string", 1, corev1.NodeSystemInfo{}.SwaggerDoc()["kernelVersion"]),
			col("Container-Runtime", "string", 1, corev1.NodeSystemInfo{}.SwaggerDoc()["containerRuntimeVersion"]),
		},
		cells: func(o runtime.Object) []string { return nodeCells(o.(*corev1.Node)) },
	},
	{Kind: "Namespace"}: {
		columns: []metav1.TableColumnDefinition{col("Status", "string", 0, "The status of the namespace"), ageColumn},
		cells:   func(o runtime.Object) []string { return []string{string(o.(*corev1.Namespace).Status.Phase)} },
	},
	{Kind: "ConfigMap"}: {
		columns: []metav1.TableColumnDefinition{col("Data", "string", 0, corev1.ConfigMap{}.SwaggerDoc()["data"]), ageColumn},
		cells: func(o runtime.Object) []string {
			c := o.(*corev1.ConfigMap)
			return []string{num(len(c.Data) + len(c.BinaryData))}
		},
	},
	{Kind: "Secret"}: {
		columns: []metav1.TableColumnDefinition{
			col("Type", "string", 0, corev1.Secret{}.SwaggerDoc()["type"]),
			col("Data", "string", 0, corev1.Secret{}.SwaggerDoc()["data"]),
			ageColumn,
		},
		cells: func(o runtime.Object) []string {
			s := o.(*corev1.Secret)
			return []string{string(s.Type), num(len(s.Data))}
		},
	},
	{Kind: "PersistentVolumeClaim"}: {
		columns: []metav1.TableColumnDefinition{
			col("Status", "string", 0, corev1.PersistentVolumeClaimStatus{}.SwaggerDoc()["phase"]),
			col("Volume", "string", 0, corev1.PersistentVolumeClaimSpec{}.SwaggerDoc()["volumeName"]),
			col("Capacity", "string", 0, corev1.PersistentVolumeClaimStatus{}.SwaggerDoc()["capacity"]),
			col("Access Modes", "string", 0, corev1.PersistentVolumeClaimStatus{}.SwaggerDoc()["accessModes"]),
			col("StorageClass", "string", 0, "StorageClass of the pvc"),
			col("VolumeAttributesClass", "string", 0, "VolumeAttributesClass of the pvc"),
			ageColumn,
			col("VolumeMode", "string", 1, corev1.PersistentVolumeClaimSpec{}.SwaggerDoc()["volumeMode"]),
		},
		cells: func(o runtime.Object) []string { return pvcCells(o.(*corev1.PersistentVolumeClaim)) },
	},
	{Group: "batch", Kind: "Job"}: {
		columns: append([]metav1.TableColumnDefinition{
			col("Status", "string", 0, "Status of the job."),
			col("Completions", "string", 0, batchv1.JobStatus{}.SwaggerDoc()["succeeded"]),
			col("Duration", "string", 0, "Time required to complete the job."),
			ageColumn,
		}, append(containersColumns, col("Selector", "string", 1, batchv1.JobSpec{}.SwaggerDoc()["selector"]))...),
		cells: func(o runtime.Object) []string { return jobCells(o.(*batchv1.Job)) },
	},
	{Group: "batch", Kind: "CronJob"}: {
		columns: append([]metav1.TableColumnDefinition{
			col("Schedule", "string", 0, batchv1.CronJobSpec{}.SwaggerDoc()["schedule"]),
			col("Timezone", "string", 0, batchv1.CronJobSpec{}.SwaggerDoc()["timeZone"]),
			col("Suspend", "boolean", 0, batchv1.CronJobSpec{}.SwaggerDoc()["suspend"]),
			col("Active", "integer", 0, batchv1.CronJobStatus{}.SwaggerDoc()["active"]),
			col("Last Schedule", "string", 0, batchv1.CronJobStatus{}.SwaggerDoc()["lastScheduleTime"]),
			ageColumn,
		}, append(containersColumns, col("Selector", "string", 1, batchv1.JobSpec{}.SwaggerDoc()["selector"]))...),
		cells: func(o runtime.Object) []string {
			c := o.(*batchv1.CronJob)
			last := "<none>"
			if c.Status.LastScheduleTime != nil {
				last = since(c.Status.LastScheduleTime.Time, "%s")
			}
			tz := "<none>"
			if c.Spec.TimeZone != nil {
				tz = *c.Spec.TimeZone
			}
			suspend := "<unset>"
			if c.Spec.Suspend != nil {
				suspend = "False"
				if *c.Spec.Suspend {
					suspend = "True"
				}
			}
			names, images := containerCells(c.Spec.JobTemplate.Spec.Template.Spec.Containers)
			return []string{c.Spec.Schedule, tz, suspend, num(len(c.Status.Active)), last, names, images, metav1.FormatLabelSelector(c.Spec.JobTemplate.Spec.Selector)}
		},
	},
	{Group: "networking.k8s.io", Kind: "Ingress"}: {
		columns: []metav1.TableColumnDefinition{
			col("Class", "string", 0, "The name of the IngressClass resource that should be used for additional configuration"),
			col("Hosts", "string", 0, "Hosts that incoming requests are matched against before the ingress rule"),
			col("Address", "string", 0, "Address is a list containing ingress points for the load-balancer"),
			col("Ports", "string", 0, "Ports of TLS configurations that open"),
			ageColumn,
		},
		cells: func(o runtime.Object) []string { return ingressCells(o.(*networkingv1.Ingress)) },
	},
}

// defaultColumns are those of a kind without a printer, as the apiserver's default table.
var defaultColumns = []metav1.TableColumnDefinition{ageColumn}

// TableColumns returns a built-in kind's table columns after Name, as the apiserver
// defines them (ColumnAge among them); ok is false for kinds without a printer, which
// show Name and Age only.
func TableColumns(gk schema.GroupKind) (cols []metav1.TableColumnDefinition, ok bool) {
	if p, ok := printers[gk]; ok {
		return p.columns, true
	}
	return defaultColumns, false
}

// Cell separators in Object.cells. A cell that depends on the time it is read is stored
// as timeMark, the Unix time, timeMark and a format whose %s becomes the time since.
const (
	cellSep  = "\x1f"
	timeMark = "\x1e"
	numMark  = "\x1d"
)

// since stores a "time since t" cell; format has one %s.
func since(t time.Time, format string) string {
	return timeMark + strconv.FormatInt(t.Unix(), 10) + timeMark + format
}

// tableCells computes a typed object's stored cells; "" for kinds without a printer.
func tableCells(gk schema.GroupKind, obj runtime.Object) string {
	p, ok := printers[gk]
	if !ok {
		return ""
	}
	return strings.Join(p.cells(obj), cellSep)
}

// Cell is one table cell: text, or an integer (a JSON number, as the apiserver sends it).
type Cell struct {
	Text   string
	Number bool
}

// Value is the cell as the apiserver's Table holds it: string or int64.
func (c Cell) Value() any {
	if c.Number {
		n, _ := strconv.ParseInt(c.Text, 10, 64)
		return n
	}
	return c.Text
}

// AppendCells appends the object's table cells for the columns of TableColumns, without
// Name and Age, to dst, rendering time-dependent cells for now. It returns dst unchanged
// for kinds without a printer and for custom resources.
func (o *Object) AppendCells(dst []Cell, now time.Time) []Cell {
	if o.cells == "" {
		return dst
	}
	rest := o.cells
	for {
		cell, tail, more := strings.Cut(rest, cellSep)
		dst = append(dst, renderCell(cell, now))
		if !more {
			return dst
		}
		rest = tail
	}
}

// HasCells reports whether the object carries table cells (built-in kinds with a printer).
func (o *Object) HasCells() bool { return o.cells != "" }

func renderCell(cell string, now time.Time) Cell {
	switch {
	case strings.HasPrefix(cell, numMark):
		return Cell{Text: cell[len(numMark):], Number: true}
	case strings.HasPrefix(cell, timeMark):
		secs, format, _ := strings.Cut(cell[len(timeMark):], timeMark)
		n, err := strconv.ParseInt(secs, 10, 64)
		if err != nil {
			return Cell{Text: cell}
		}
		return Cell{Text: strings.Replace(format, "%s", duration.HumanDuration(now.Sub(time.Unix(n, 0))), 1)}
	}
	return Cell{Text: cell}
}

// num stores an integer cell: the apiserver's printer puts an int64 there, a JSON number.
func num[T int | int32 | int64](n T) string { return numMark + strconv.FormatInt(int64(n), 10) }

// ptrOr is *p, or 0 (the apiserver's printer reads defaulted fields, never nil).
func ptrOr(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func containerCells(cs []corev1.Container) (names, images string) {
	n := make([]string, len(cs))
	i := make([]string, len(cs))
	for k, c := range cs {
		n[k], i[k] = c.Name, c.Image
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}

func isRestartableInit(c *corev1.Container) bool {
	return c != nil && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// podCells is the apiserver's printPod.
func podCells(pod *corev1.Pod) []string {
	restarts, restartableInitRestarts := 0, 0
	total, ready := len(pod.Spec.Containers), 0
	var lastRestart, lastRestartableInitRestart time.Time
	reason := string(pod.Status.Phase)
	if pod.Status.Reason != "" {
		reason = pod.Status.Reason
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonSchedulingGated {
			reason = corev1.PodReasonSchedulingGated
		}
	}
	inits := map[string]*corev1.Container{}
	for i := range pod.Spec.InitContainers {
		inits[pod.Spec.InitContainers[i].Name] = &pod.Spec.InitContainers[i]
		if isRestartableInit(&pod.Spec.InitContainers[i]) {
			total++
		}
	}
	later := func(t *time.Time, st corev1.ContainerStatus) {
		if term := st.LastTerminationState.Terminated; term != nil && t.Before(term.FinishedAt.Time) {
			*t = term.FinishedAt.Time
		}
	}
	initializing := false
	for i, c := range pod.Status.InitContainerStatuses {
		restarts += int(c.RestartCount)
		later(&lastRestart, c)
		if isRestartableInit(inits[c.Name]) {
			restartableInitRestarts += int(c.RestartCount)
			later(&lastRestartableInitRestart, c)
		}
		switch {
		case c.State.Terminated != nil && c.State.Terminated.ExitCode == 0:
			continue
		case isRestartableInit(inits[c.Name]) && c.Started != nil && *c.Started:
			if c.Ready {
				ready++
			}
			continue
		case c.State.Terminated != nil:
			switch {
			case c.State.Terminated.Reason != "":
				reason = "Init:" + c.State.Terminated.Reason
			case c.State.Terminated.Signal != 0:
				reason = fmt.Sprintf("Init:Signal:%d", c.State.Terminated.Signal)
			default:
				reason = fmt.Sprintf("Init:ExitCode:%d", c.State.Terminated.ExitCode)
			}
			initializing = true
		case c.State.Waiting != nil && c.State.Waiting.Reason != "" && c.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + c.State.Waiting.Reason
			initializing = true
		default:
			reason = fmt.Sprintf("Init:%d/%d", i, len(pod.Spec.InitContainers))
			initializing = true
		}
		break
	}
	if !initializing || podInitialized(pod) {
		restarts, lastRestart = restartableInitRestarts, lastRestartableInitRestart
		hasRunning, errorReason := false, ""
		for i := len(pod.Status.ContainerStatuses) - 1; i >= 0; i-- {
			c := pod.Status.ContainerStatuses[i]
			restarts += int(c.RestartCount)
			later(&lastRestart, c)
			switch {
			case c.State.Waiting != nil && c.State.Waiting.Reason != "":
				reason = c.State.Waiting.Reason
			case c.State.Terminated != nil:
				switch {
				case c.State.Terminated.Reason != "":
					reason = c.State.Terminated.Reason
				case c.State.Terminated.Signal != 0:
					reason = fmt.Sprintf("Signal:%d", c.State.Terminated.Signal)
				default:
					reason = fmt.Sprintf("ExitCode:%d", c.State.Terminated.ExitCode)
				}
				if c.State.Terminated.ExitCode != 0 {
					errorReason = reason
				}
			case c.Ready && c.State.Running != nil:
				hasRunning = true
				ready++
			}
		}
		if reason == "Completed" {
			switch {
			case hasRunning && podReady(pod):
				reason = "Running"
			case errorReason != "":
				reason = errorReason
			case hasRunning:
				reason = "NotReady"
			}
		}
	}
	terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	if pod.DeletionTimestamp != nil && pod.Status.Reason == "NodeLost" {
		reason = "Unknown"
	} else if pod.DeletionTimestamp != nil && !terminal {
		reason = "Terminating"
	}
	restartsCell := strconv.Itoa(restarts)
	if restarts != 0 && !lastRestart.IsZero() {
		restartsCell = since(lastRestart, restartsCell+" (%s ago)")
	}
	ip, node, nominated := "<none>", orNone(pod.Spec.NodeName), orNone(pod.Status.NominatedNodeName)
	if len(pod.Status.PodIPs) > 0 && pod.Status.PodIPs[0].IP != "" {
		ip = pod.Status.PodIPs[0].IP
	}
	gates := "<none>"
	if len(pod.Spec.ReadinessGates) > 0 {
		n := 0
		for _, g := range pod.Spec.ReadinessGates {
			for _, c := range pod.Status.Conditions {
				if c.Type == g.ConditionType {
					if c.Status == corev1.ConditionTrue {
						n++
					}
					break
				}
			}
		}
		gates = fmt.Sprintf("%d/%d", n, len(pod.Spec.ReadinessGates))
	}
	return []string{fmt.Sprintf("%d/%d", ready, total), reason, restartsCell, ip, node, nominated, gates}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func podInitialized(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodInitialized && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// loadBalancerWidth is how much of a load balancer's addresses a non-wide table shows;
// the apiserver's tables are always wide.
func loadBalancer(ips []string) string {
	sort.Strings(ips)
	return strings.Join(slicesCompact(ips), ",")
}

func slicesCompact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func serviceCells(s *corev1.Service) []string {
	internal := "<none>"
	if len(s.Spec.ClusterIPs) > 0 {
		internal = s.Spec.ClusterIPs[0]
	}
	var external string
	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort:
		external = "<none>"
		if len(s.Spec.ExternalIPs) > 0 {
			external = strings.Join(s.Spec.ExternalIPs, ",")
		}
	case corev1.ServiceTypeLoadBalancer:
		var ips []string
		for _, in := range s.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				ips = append(ips, in.IP)
			} else if in.Hostname != "" {
				ips = append(ips, in.Hostname)
			}
		}
		lb := loadBalancer(ips)
		switch {
		case len(s.Spec.ExternalIPs) > 0:
			var all []string
			if lb != "" {
				all = strings.Split(lb, ",")
			}
			external = strings.Join(append(all, s.Spec.ExternalIPs...), ",")
		case lb != "":
			external = lb
		default:
			external = "<pending>"
		}
	case corev1.ServiceTypeExternalName:
		external = s.Spec.ExternalName
	default:
		external = "<unknown>"
	}
	ports := make([]string, len(s.Spec.Ports))
	for i, p := range s.Spec.Ports {
		ports[i] = fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort > 0 {
			ports[i] = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		}
	}
	return []string{string(s.Spec.Type), internal, external, orNone(strings.Join(ports, ",")), labels.FormatLabels(s.Spec.Selector)}
}

func nodeCells(n *corev1.Node) []string {
	var status []string
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				status = []string{"Ready"}
			} else {
				status = []string{"NotReady"}
			}
		}
	}
	if len(status) == 0 {
		status = []string{"Unknown"}
	}
	if n.Spec.Unschedulable {
		status = append(status, "SchedulingDisabled")
	}
	roleSet := map[string]bool{}
	for k, v := range n.Labels {
		if role, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && role != "" {
			roleSet[role] = true
		} else if k == "kubernetes.io/role" && v != "" {
			roleSet[v] = true
		}
	}
	roles := make([]string, 0, len(roleSet))
	for r := range roleSet {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	address := func(t corev1.NodeAddressType) string {
		for _, a := range n.Status.Addresses {
			if a.Type == t {
				return a.Address
			}
		}
		return "<none>"
	}
	info := n.Status.NodeInfo
	unknown := func(s string) string {
		if s == "" {
			return "<unknown>"
		}
		return s
	}
	kernel := unknown(info.KernelVersion)
	if info.Architecture != "" {
		kernel += " (" + info.Architecture + ")"
	}
	return []string{strings.Join(status, ","), orNone(strings.Join(roles, ",")), info.KubeletVersion,
		address(corev1.NodeInternalIP), address(corev1.NodeExternalIP), unknown(info.OSImage), kernel, unknown(info.ContainerRuntimeVersion)}
}

func pvcCells(p *corev1.PersistentVolumeClaim) []string {
	phase := string(p.Status.Phase)
	if p.DeletionTimestamp != nil {
		phase = "Terminating"
	}
	vac, capacity, modes, mode := "<unset>", "", "", "<unset>"
	if p.Spec.VolumeAttributesClassName != nil {
		vac = *p.Spec.VolumeAttributesClassName
	}
	if p.Spec.VolumeName != "" {
		modes = accessModes(p.Status.AccessModes)
		q := p.Status.Capacity[corev1.ResourceStorage]
		capacity = q.String()
	}
	if p.Spec.VolumeMode != nil {
		mode = string(*p.Spec.VolumeMode)
	}
	class := ""
	if c, ok := p.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		class = c
	} else if p.Spec.StorageClassName != nil {
		class = *p.Spec.StorageClassName
	}
	return []string{phase, p.Spec.VolumeName, capacity, modes, class, vac, mode}
}

// accessModes is the apiserver's GetAccessModesAsString.
func accessModes(modes []corev1.PersistentVolumeAccessMode) string {
	has := func(m corev1.PersistentVolumeAccessMode) bool {
		for _, x := range modes {
			if x == m {
				return true
			}
		}
		return false
	}
	var out []string
	for _, m := range []struct {
		mode  corev1.PersistentVolumeAccessMode
		short string
	}{{corev1.ReadWriteOnce, "RWO"}, {corev1.ReadOnlyMany, "ROX"}, {corev1.ReadWriteMany, "RWX"}, {corev1.ReadWriteOncePod, "RWOP"}} {
		if has(m.mode) {
			out = append(out, m.short)
		}
	}
	return strings.Join(out, ",")
}

func jobCells(j *batchv1.Job) []string {
	var completions string
	switch {
	case j.Spec.Completions != nil:
		completions = fmt.Sprintf("%d/%d", j.Status.Succeeded, *j.Spec.Completions)
	case j.Spec.Parallelism != nil && *j.Spec.Parallelism > 1:
		completions = fmt.Sprintf("%d/1 of %d", j.Status.Succeeded, *j.Spec.Parallelism)
	default:
		completions = fmt.Sprintf("%d/1", j.Status.Succeeded)
	}
	var dur string
	switch {
	case j.Status.StartTime == nil:
	case j.Status.CompletionTime == nil:
		dur = since(j.Status.StartTime.Time, "%s")
	default:
		dur = duration.HumanDuration(j.Status.CompletionTime.Sub(j.Status.StartTime.Time))
	}
	has := func(t batchv1.JobConditionType) bool {
		for _, c := range j.Status.Conditions {
			if c.Type == t {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	}
	status := "Running"
	switch {
	case has(batchv1.JobComplete):
		status = "Complete"
	case has(batchv1.JobFailed):
		status = "Failed"
	case j.DeletionTimestamp != nil:
		status = "Terminating"
	case has(batchv1.JobSuspended):
		status = "Suspended"
	case has(batchv1.JobFailureTarget):
		status = "FailureTarget"
	case has(batchv1.JobSuccessCriteriaMet):
		status = "SuccessCriteriaMet"
	}
	names, images := containerCells(j.Spec.Template.Spec.Containers)
	return []string{status, completions, dur, names, images, metav1.FormatLabelSelector(j.Spec.Selector)}
}

func ingressCells(in *networkingv1.Ingress) []string {
	class := "<none>"
	if in.Spec.IngressClassName != nil {
		class = *in.Spec.IngressClassName
	}
	var hosts []string
	more := false
	for _, r := range in.Spec.Rules {
		if len(hosts) == 3 {
			more = true
		}
		if !more && r.Host != "" {
			hosts = append(hosts, r.Host)
		}
	}
	h := "*"
	if len(hosts) > 0 {
		h = strings.Join(hosts, ",")
		if more {
			h = fmt.Sprintf("%s + %d more...", h, len(in.Spec.Rules)-3)
		}
	}
	var ips []string
	for _, i := range in.Status.LoadBalancer.Ingress {
		if i.IP != "" {
			ips = append(ips, i.IP)
		} else if i.Hostname != "" {
			ips = append(ips, i.Hostname)
		}
	}
	ports := "80"
	if len(in.Spec.TLS) > 0 {
		ports = "80, 443"
	}
	return []string{class, h, loadBalancer(ips), ports}
}
