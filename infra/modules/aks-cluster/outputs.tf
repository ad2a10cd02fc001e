output "cluster_name" {
  description = "Name of the AKS cluster."
  value       = azurerm_kubernetes_cluster.this.name
}

output "endpoint" {
  description = "HTTPS URL of the cluster's Kubernetes API server."
  value       = "https://${azurerm_kubernetes_cluster.this.fqdn}:443"
}

output "cluster_ca_certificate" {
  description = "Base64-encoded PEM certificate of the cluster's certificate authority."
  # The provider marks the whole kube_config block sensitive; a CA certificate is public.
  value = nonsensitive(azurerm_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate)
}

output "kubeconfig" {
  description = "Kubeconfig (YAML) for the cluster; it authenticates through kubelogin with the service principal in the caller's AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (the cluster has no local accounts)."
  value       = local.kubeconfig
  sensitive   = true
}

output "home_storage" {
  description = "NFS 4.1 export that holds the users' home directories (Azure Files premium share)."
  value = {
    type        = "nfs"
    server      = azurerm_storage_account.home.primary_file_host
    path        = "/${azurerm_storage_account.home.name}/${azurerm_storage_share.home.name}"
    capacity_gb = azurerm_storage_share.home.quota
  }
}

output "region" {
  description = "Azure location of the cluster."
  value       = var.region
}

output "resource_group_name" {
  description = "Resource group that holds the cluster, its network and its storage account."
  value       = azurerm_resource_group.this.name
}
