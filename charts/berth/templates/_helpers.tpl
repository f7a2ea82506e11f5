{{/* Labels every object of the release carries. */}}
{{- define "berth.labels" -}}
app.kubernetes.io/part-of: berth
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The image of one of berth's binaries. */}}
{{- define "berth.image" -}}
{{ printf "%s/%s:%s" .root.Values.image.repository .name (default .root.Chart.AppVersion .root.Values.image.tag | toString) }}
{{- end }}

{{/* The webhook Service's name; berth-manager's certificate is issued for it. */}}
{{- define "berth.webhookService" -}}berth-webhook{{- end }}

{{/* With cert-manager, its CA injector fills the webhook configurations' caBundle. */}}
{{- define "berth.certManagerAnnotations" -}}
{{- if .Values.webhook.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/berth-webhook
{{- end }}
{{- end }}
