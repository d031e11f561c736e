{{/* The name of every object of the release: "lazyscale" unless the release says otherwise. */}}
{{- define "lazyscale.fullname" -}}
{{- if contains "lazyscale" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-lazyscale" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lazyscale.selectorLabels" -}}
app.kubernetes.io/name: lazyscale
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lazyscale.labels" -}}
{{ include "lazyscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lazyscale.serviceAccountName" -}}
{{- default (include "lazyscale.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "lazyscale.webhookService" -}}
{{- printf "%s-webhook" (include "lazyscale.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lazyscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
