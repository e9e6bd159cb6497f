return { status = "Healthy", message = "wildcard _.crossplane.io/_" }
