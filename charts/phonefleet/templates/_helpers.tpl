{{/* Chart name, overridable. */}}
{{- define "phonefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: prefix of every object's name. */}}
{{- define "phonefleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "phonefleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "phonefleet.labels" -}}
helm.sh/chart: {{ include "phonefleet.chart" . }}
{{ include "phonefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: phonefleet
{{- end }}

{{/* Labels selecting the controller's pods. */}}
{{- define "phonefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phonefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "phonefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "phonefleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace whose schedules and sites are watched (scope Namespace). */}}
{{- define "phonefleet.watchNamespace" -}}
{{- default .Release.Namespace .Values.watch.namespace }}
{{- end }}

{{/* The watched namespaces with scope Namespaces (a JSON list); fails when there are none. */}}
{{- define "phonefleet.watchNamespaces" -}}
{{- if not .Values.watch.namespaces }}
{{- fail "watch.namespaces: list at least one namespace when watch.scope is Namespaces" }}
{{- end }}
{{- .Values.watch.namespaces | uniq | sortAlpha | toJson }}
{{- end }}

{{/* The namespaces the owned-objects policy covers outside Cluster scope (a JSON list): the
watched one(s) and the release namespace (leader Lease). */}}
{{- define "phonefleet.policyNamespaces" -}}
{{- $list := list .Release.Namespace }}
{{- if eq .Values.watch.scope "Namespaces" }}
{{- range (include "phonefleet.watchNamespaces" . | fromJsonArray) }}{{ $list = append $list . }}{{ end }}
{{- else }}
{{- $list = append $list (include "phonefleet.watchNamespace" .) }}
{{- end }}
{{- $list | uniq | sortAlpha | toJson }}
{{- end }}

{{- define "phonefleet.provisioningServiceName" -}}
{{- printf "%s-provisioning" (include "phonefleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "phonefleet.metricsServiceName" -}}
{{- printf "%s-metrics" (include "phonefleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The base URL written into the phones' files. */}}
{{- define "phonefleet.serverUrl" -}}
{{- if .Values.controller.serverUrl }}
{{- .Values.controller.serverUrl }}
{{- else }}
{{- $scheme := ternary "https" "http" (ne .Values.provisioning.tls.secretName "") }}
{{- $port := int .Values.provisioning.service.port }}
{{- $default := ternary 443 80 (eq $scheme "https") }}
{{- $host := printf "%s.%s.svc" (include "phonefleet.provisioningServiceName" .) .Release.Namespace }}
{{- if eq $port $default }}
{{- printf "%s://%s%s" $scheme $host .Values.provisioning.pathPrefix }}
{{- else }}
{{- printf "%s://%s:%d%s" $scheme $host $port .Values.provisioning.pathPrefix }}
{{- end }}
{{- end }}
{{- end }}

{{- define "phonefleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The rules the controller and its provisioning server need in every watched namespace. Each one
is a call in src/: see docs/helm.md for the table.
*/}}
{{- define "phonefleet.rules" -}}
# Watch caches of the custom resources (kube-rs reflectors: list, then watch).
- apiGroups: ["phonefleet.io"]
  resources: ["phoneschedules", "phonesites"]
  verbs: ["list", "watch"]
# Schedule and site status (phone count, Valid condition), written by server-side apply.
- apiGroups: ["phonefleet.io"]
  resources: ["phoneschedules/status", "phonesites/status"]
  verbs: ["patch"]
# Rendered configs (controller: server-side apply, delete of stale shards, get after a restart)
# and progress (server: server-side apply of the skeleton, merge patch of changed phones). A
# server-side apply that creates the object needs create as well as patch.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Download tokens (server) and, in the release namespace, the leader Lease (controller).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update"]
# Events on schedules (kube-rs Recorder: create, patch for repeated events).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
