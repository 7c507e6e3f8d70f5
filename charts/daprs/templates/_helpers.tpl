{{/* Labels every object carries. */}}
{{- define "daprs.labels" -}}
app.kubernetes.io/part-of: daprs
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* An image reference: <registry>/<name>:<tag>, or the name alone when it holds a "/". */}}
{{- define "daprs.image" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $tag := $root.Values.global.tag | default $root.Chart.AppVersion -}}
{{- if contains "/" $name -}}
{{- $name -}}
{{- else -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.global.registry) $name $tag -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets from a name or a list of names. */}}
{{- define "daprs.imagePullSecrets" -}}
{{- $s := .Values.global.imagePullSecrets -}}
{{- if $s -}}
imagePullSecrets:
{{- if kindIs "string" $s }}
- name: {{ $s }}
{{- else }}
{{- range $s }}
{{- if kindIs "string" . }}
- name: {{ . }}
{{- else }}
- name: {{ .name }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Replicas of a control-plane Deployment. */}}
{{- define "daprs.replicas" -}}
{{- $root := index . 0 -}}
{{- $own := index . 1 -}}
{{- if $root.Values.global.ha.enabled -}}
{{- $root.Values.global.ha.replicaCount -}}
{{- else -}}
{{- $own.replicaCount -}}
{{- end -}}
{{- end -}}

{{/* Scheduling shared by the control-plane pods; the argument is [root, app label]. */}}
{{- define "daprs.scheduling" -}}
{{- $root := index . 0 -}}
{{- $app := index . 1 -}}
{{- with $root.Values.global.nodeSelector -}}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $root.Values.global.tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $root.Values.global.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- /* Everything above is optional; affinity always follows. */}}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions:
        - key: kubernetes.io/os
          operator: In
          values: [linux]
{{- if $root.Values.global.ha.enabled }}
  podAntiAffinity:
{{- if hasPrefix "required" $root.Values.global.ha.podAntiAffinityPolicy }}
    requiredDuringSchedulingIgnoredDuringExecution:
    - labelSelector:
        matchLabels:
          app.kubernetes.io/name: {{ $app }}
      topologyKey: {{ $root.Values.global.ha.topologyKey }}
{{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        labelSelector:
          matchLabels:
            app.kubernetes.io/name: {{ $app }}
        topologyKey: {{ $root.Values.global.ha.topologyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget in HA mode; the argument is [root, app label]. */}}
{{- define "daprs.pdb" -}}
{{- $root := index . 0 -}}
{{- $app := index . 1 -}}
{{- if $root.Values.global.ha.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $app }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    app.kubernetes.io/name: {{ $app }}
{{ include "daprs.labels" $root | indent 4 }}
spec:
{{- if $root.Values.global.ha.disruption.minimumAvailable }}
  minAvailable: {{ $root.Values.global.ha.disruption.minimumAvailable }}
{{- else }}
  maxUnavailable: {{ $root.Values.global.ha.disruption.maximumUnavailable }}
{{- end }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ $app }}
{{- end }}
{{- end -}}

{{/* The hardened security context of every control-plane container. */}}
{{- define "daprs.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* The address a component listens on. */}}
{{- define "daprs.listenAddress" -}}
{{- . | default "0.0.0.0" -}}
{{- end -}}
