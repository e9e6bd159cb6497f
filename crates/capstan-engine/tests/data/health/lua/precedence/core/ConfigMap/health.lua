return { status = "Healthy", message = "exact core/ConfigMap" }
