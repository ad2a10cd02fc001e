output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "endpoint" {
  description = "HTTPS URL of the cluster's Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_ca_certificate" {
  description = "Base64-encoded PEM certificate of the cluster's certificate authority."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "kubeconfig" {
  description = "Kubeconfig (YAML) for the cluster; it authenticates with `aws eks get-token` and the caller's AWS credentials."
  value       = local.kubeconfig
  sensitive   = true
}

output "home_storage" {
  description = "NFS export that holds the users' home directories (EFS, reachable from every private subnet)."
  value = {
    type        = "nfs"
    server      = aws_efs_file_system.home.dns_name
    path        = "/"
    capacity_gb = var.home_storage_gb
  }

  # The file system is only reachable once it has a mount target in the nodes' subnets.
  depends_on = [aws_efs_mount_target.home, aws_vpc_security_group_ingress_rule.efs_from_nodes]
}

output "region" {
  description = "Region of the cluster."
  value       = var.region
}

output "vpc_id" {
  description = "ID of the cluster's VPC."
  value       = aws_vpc.this.id
}

output "cluster_autoscaler_role_arn" {
  description = "IAM role that EKS Pod Identity gives the service account kube-system/cluster-autoscaler."
  value       = aws_iam_role.cluster_autoscaler.arn
}
