output "name" {
  description = "Name of the local cluster."
  value       = terraform_data.cluster.output.name
}

output "data_dir" {
  description = "Directory that holds the cluster's hubs (the local backend's root is its hubs/ subdirectory)."
  value       = terraform_data.cluster.output.data_dir
}

output "hubs_dir" {
  description = "The local backend's root: one subdirectory per hub."
  value       = terraform_data.cluster.output.hubs_dir
}

output "port_range" {
  description = "First and last TCP port the local backend may give to hubs."
  value       = [terraform_data.cluster.output.port_first, terraform_data.cluster.output.port_last]
}
