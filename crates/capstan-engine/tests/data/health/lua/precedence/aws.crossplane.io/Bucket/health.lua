return { status = "Healthy", message = "exact aws.crossplane.io/Bucket" }
