output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.this.name
}

output "endpoint" {
  description = "HTTPS URL of the cluster's Kubernetes API server."
  value       = local.endpoint
}

output "cluster_ca_certificate" {
  description = "Base64-encoded PEM certificate of the cluster's certificate authority."
  value       = local.ca
}

output "kubeconfig" {
  description = "Kubeconfig (YAML) for the cluster; it authenticates through gke-gcloud-auth-plugin with the caller's Application Default Credentials."
  value       = local.kubeconfig
  sensitive   = true
}

output "home_storage" {
  description = "NFS export that holds the users' home directories (Filestore)."
  value = {
    type        = "nfs"
    server      = google_filestore_instance.home.networks[0].ip_addresses[0]
    path        = "/${google_filestore_instance.home.file_shares[0].name}"
    capacity_gb = google_filestore_instance.home.file_shares[0].capacity_gb
  }
}

output "region" {
  description = "Region of the cluster."
  value       = var.region
}

output "zone" {
  description = "Zone of the node pools and of the Filestore instance."
  value       = local.zone
}

output "node_service_account" {
  description = "Email of the Google service account the nodes run as."
  value       = google_service_account.nodes.email
}
