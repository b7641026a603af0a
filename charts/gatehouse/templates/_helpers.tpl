{{/*
Name prefix of every object: the release name, or fullnameOverride.
*/}}
{{- define "gatehouse.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride -}}
{{- end }}

{{/*
An object name, checked: Kubernetes names used here (Deployments, Services,
label values) are at most 63 characters. Fails instead of truncating, so two
groups never end up with the same name.
*/}}
{{- define "gatehouse.checkName" -}}
{{- if gt (len .) 63 -}}
{{- fail (printf "name %q is longer than 63 characters: use a shorter release name, fullnameOverride or group name" .) -}}
{{- end -}}
{{- . -}}
{{- end }}

{{- define "gatehouse.controller.name" -}}
{{- include "gatehouse.checkName" (printf "%s-controller" (include "gatehouse.fullname" .)) -}}
{{- end }}

{{- define "gatehouse.dataplane.name" -}}
{{- include "gatehouse.checkName" (printf "%s-dataplane" (include "gatehouse.fullname" .)) -}}
{{- end }}

{{/* Deployment, Service, HPA and PDB name of a group: dict "root" $ "group" NAME. */}}
{{- define "gatehouse.group.name" -}}
{{- include "gatehouse.checkName" (printf "%s-dataplane-%s" (include "gatehouse.fullname" .root) .group) -}}
{{- end }}

{{- define "gatehouse.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end }}

{{/* An integer, or a quoted percentage such as "50%". */}}
{{- define "gatehouse.intOrPercent" -}}
{{- if kindIs "string" . -}}{{ quote . }}{{- else -}}{{ int . }}{{- end -}}
{{- end }}

{{/* Labels on every object. */}}
{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: gatehouse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: dict "root" $ "component" NAME. */}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: gatehouse
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The settings of one group: dataplane.defaults with the group entry over
them. A key the group sets replaces the default, except hpa, pdb and service,
which are merged key by key. Explicit, because sprig's merge functions skip
false and zero values (a group could not turn off what the defaults turn on).
Call with dict "root" $ "group" ENTRY; returns YAML for fromYaml.
*/}}
{{- define "gatehouse.groupValues" -}}
{{- $merged := deepCopy .root.Values.dataplane.defaults -}}
{{- range $key, $value := .group -}}
{{- if and (has $key (list "hpa" "pdb" "service")) (kindIs "map" $value) (kindIs "map" (get $merged $key)) -}}
{{- $inner := get $merged $key -}}
{{- range $k, $v := $value -}}
{{- $_ := set $inner $k $v -}}
{{- end -}}
{{- else -}}
{{- $_ := set $merged $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $merged -}}
{{- end }}

{{/*
Checks across groups that the schema cannot express: unique names, listener
ports that fit with the offset and do not collide with the admin port or
each other, HPA bounds.
*/}}
{{- define "gatehouse.validateGroups" -}}
{{- $seen := dict -}}
{{- $offset := int .Values.dataplane.portOffset -}}
{{- range $entry := .Values.groups -}}
{{- if hasKey $seen $entry.name -}}
{{- fail (printf "groups: %q is listed twice" $entry.name) -}}
{{- end -}}
{{- $_ := set $seen $entry.name true -}}
{{- $g := include "gatehouse.groupValues" (dict "root" $ "group" $entry) | fromYaml -}}
{{- $ports := dict -}}
{{- $names := dict -}}
{{- range $p := $g.ports -}}
{{- $bind := add (int $p.port) $offset -}}
{{- if gt (int $bind) 65535 -}}
{{- fail (printf "groups[%s]: port %d + dataplane.portOffset %d is above 65535" $entry.name (int $p.port) $offset) -}}
{{- end -}}
{{- if eq (int $bind) (int $.Values.dataplane.adminPort) -}}
{{- fail (printf "groups[%s]: port %d + dataplane.portOffset %d is dataplane.adminPort" $entry.name (int $p.port) $offset) -}}
{{- end -}}
{{- if hasKey $ports (toString $p.port) -}}
{{- fail (printf "groups[%s]: port %d is listed twice" $entry.name (int $p.port)) -}}
{{- end -}}
{{- $_ := set $ports (toString $p.port) true -}}
{{- $portName := default (printf "port-%d" (int $p.port)) $p.name -}}
{{- if hasKey $names $portName -}}
{{- fail (printf "groups[%s]: port name %q is used twice" $entry.name $portName) -}}
{{- end -}}
{{- $_ := set $names $portName true -}}
{{- end -}}
{{- if $g.hpa.enabled -}}
{{- if gt (int $g.hpa.minReplicas) (int $g.hpa.maxReplicas) -}}
{{- fail (printf "groups[%s]: hpa.minReplicas is above hpa.maxReplicas" $entry.name) -}}
{{- end -}}
{{- if not (or $g.hpa.targetCPUUtilizationPercentage $g.hpa.targetMemoryUtilizationPercentage) -}}
{{- fail (printf "groups[%s]: hpa needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $entry.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}
