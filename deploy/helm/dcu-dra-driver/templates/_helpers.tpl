{{/*
Names, labels and paths shared by the templates. With release "dcu-dra" the names are those of
the plain manifests in deploy/ (dcu-dra-kubelet-plugin).
*/}}

{{/* The chart name, for the app.kubernetes.io/name label. */}}
{{- define "dcu-dra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of object names: fullnameOverride, else the release name. */}}
{{- define "dcu-dra.prefix" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- end -}}

{{/* The kubelet plugin's DaemonSet, ClusterRole and ClusterRoleBinding. */}}
{{- define "dcu-dra.pluginName" -}}
{{- printf "%s-kubelet-plugin" (include "dcu-dra.prefix" .) -}}
{{- end -}}

{{/* The ServiceAccount the plugin runs as. */}}
{{- define "dcu-dra.serviceAccountName" -}}
{{- default (include "dcu-dra.pluginName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The user name the API server gives the plugin's ServiceAccount tokens. */}}
{{- define "dcu-dra.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "dcu-dra.serviceAccountName" .) -}}
{{- end -}}

{{/* The ConfigMap holding the mock node config. */}}
{{- define "dcu-dra.mockConfigName" -}}
{{- printf "%s-mock-config" (include "dcu-dra.prefix" .) -}}
{{- end -}}

{{/* The shares DeviceClass: only shareable DCUs. */}}
{{- define "dcu-dra.sharesClassName" -}}
{{- printf "vdcu.%s" .Values.driverName -}}
{{- end -}}

{{- define "dcu-dra.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Host paths of the kubelet's plugin directories; mounted at the same paths. */}}
{{- define "dcu-dra.registrarDir" -}}
{{- printf "%s/plugins_registry" (trimSuffix "/" .Values.kubeletDir) -}}
{{- end -}}

{{- define "dcu-dra.pluginDataDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* Labels of the chart's objects that are not pods. */}}
{{- define "dcu-dra.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dcu-dra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dcu-dra
{{- end -}}

{{/* Labels that select the plugin pods; never change them (a DaemonSet's selector is immutable). */}}
{{- define "dcu-dra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dcu-dra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dcu-dra.pluginSelectorLabels" -}}
{{ include "dcu-dra.selectorLabels" . }}
app.kubernetes.io/component: kubelet-plugin
{{- end -}}
