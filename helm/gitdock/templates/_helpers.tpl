{{/* Names and labels, as `helm create` makes them. */}}
{{- define "gitdock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gitdock.fullname" -}}
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

{{- define "gitdock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitdock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gitdock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gitdock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The agent's configuration: the values' `config` with the chart's own listen, state_dir
     and api_token (from apiToken.existingSecret) on top. */}}
{{- define "gitdock.config" -}}
{{- $own := dict "listen" (printf "0.0.0.0:%d" (int .Values.service.port)) "state_dir" "/var/lib/gitdock" }}
{{- if .Values.apiToken.existingSecret }}
{{- $_ := set $own "api_token" (dict "file" (printf "/var/run/secrets/gitdock/api-token/%s" .Values.apiToken.key)) }}
{{- end }}
{{- mustMergeOverwrite (deepCopy .Values.config) $own | toYaml }}
{{- end }}
