{{/* The release's full name: the release name alone when it already says lth-operator. */}}
{{- define "lth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lth.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* TensorBoard's pods: a name of their own, so neither the operator's Deployment, Service nor
NetworkPolicy selects them. */}}
{{- define "lth.tensorboardSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-tensorboard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lth.labels" -}}
{{ include "lth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lth.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches, when not all of them: the list, or the release namespace. */}}
{{- define "lth.watchedNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toJson .Values.watch.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* Where the Spark driver's ServiceAccount is made: as listed, else the watched namespaces. */}}
{{- define "lth.sparkNamespaces" -}}
{{- if .Values.sparkServiceAccount.namespaces -}}
{{- toJson .Values.sparkServiceAccount.namespaces -}}
{{- else if .Values.watch.allNamespaces -}}
{{- toJson (list .Release.Namespace) -}}
{{- else -}}
{{- include "lth.watchedNamespaces" . -}}
{{- end -}}
{{- end -}}

{{/* The operator's rules on the objects of one namespace (a Role) or of all (the ClusterRole). */}}
{{- define "lth.operatorRules" -}}
- apiGroups: [lth.dev]
  resources: [lotteryticketruns]
  verbs: [get, list, watch, patch]
- apiGroups: [lth.dev]
  resources: [lotteryticketruns/status]
  verbs: [get, patch]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: [lth.dev]
  resources: [lotteryticketruns/finalizers]
  verbs: [update]
- apiGroups: [sparkoperator.k8s.io]
  resources: [sparkapplications]
  verbs: [create, get, list, watch, delete, patch]
- apiGroups: [kubeflow.org]
  resources: [pytorchjobs]
  verbs: [create, get, list, watch, delete, patch]
# Levels as Kubeflow Trainer v2 TrainJobs (spec.resources.trainingApi: TrainJob): never
# updated once created (Kueue's runtime patch stays as Kueue wrote it).
- apiGroups: [trainer.kubeflow.org]
  resources: [trainjobs]
  verbs: [create, get, list, watch, delete]
# The export Job writes (and uploads) the ticket once a search ended.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# The master pod's termination message carries a level's result.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
# A running level's epochs: one read of its master pod's log tail per resync period.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# Its own events; and a child's, to say why a controller could not create its pods
# (FailedCreatePod, FailedCreate: Pod Security, a quota).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# Why Kueue holds a suspended child: its Workload (read only; absent without Kueue).
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, list]
{{- end -}}

{{- define "lth.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
