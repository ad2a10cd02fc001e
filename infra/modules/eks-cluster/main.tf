# Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never from variables.
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      "hubfleet:cluster" = var.name
      "managed-by"       = "terraform"
    }
  }
}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  partition = data.aws_partition.current.partition

  # IAM names are global to the account, so they carry the region as well as the cluster name.
  iam_prefix = "${var.name}-${var.region}"

  # Up to three zones, each with a public /24 (load balancers, NAT) and a private /20 (nodes and pods).
  vpc_cidr        = "10.0.0.0/16"
  azs             = slice(data.aws_availability_zones.available.names, 0, min(3, length(data.aws_availability_zones.available.names)))
  public_subnets  = { for index, az in local.azs : az => cidrsubnet(local.vpc_cidr, 8, index) }
  private_subnets = { for index, az in local.azs : az => cidrsubnet(local.vpc_cidr, 4, index + 1) }

  purpose_label = "hub.jupyter.org/node-purpose"
  user_taint    = { key = "hub.jupyter.org/dedicated", value = "user", effect = "NO_SCHEDULE" }
  gpu_taint     = { key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }

  # Node groups whose size the cluster autoscaler sets between min_size and max_size.
  autoscaled_groups = merge(
    {
      user = {
        instance_type = var.user_machine_type
        ami_type      = "AL2023_x86_64_STANDARD"
        min_size      = var.user_min_nodes
        max_size      = var.user_max_nodes
        taint         = local.user_taint
      }
    },
    var.gpu_enabled ? {
      gpu = {
        instance_type = var.gpu_machine_type
        ami_type      = "AL2023_x86_64_NVIDIA"
        min_size      = 0
        max_size      = var.gpu_max_nodes
        taint         = local.gpu_taint
      }
    } : {},
  )
}

# -- network ------------------------------------------------------------------------------------------------------

resource "aws_vpc" "this" {
  cidr_block           = local.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = var.name
  }
}

resource "aws_subnet" "public" {
  for_each = local.public_subnets

  vpc_id                  = aws_vpc.this.id
  availability_zone       = each.key
  cidr_block              = each.value
  map_public_ip_on_launch = true

  tags = {
    Name                     = "${var.name}-public-${each.key}"
    "kubernetes.io/role/elb" = "1"
  }
}

resource "aws_subnet" "private" {
  for_each = local.private_subnets

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value

  tags = {
    Name                              = "${var.name}-private-${each.key}"
    "kubernetes.io/role/internal-elb" = "1"
  }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = var.name
  }
}

# One NAT gateway for the private subnets keeps the cost down; nodes lose egress while its zone is down.
resource "aws_eip" "nat" {
  domain = "vpc"

  tags = {
    Name = "${var.name}-nat"
  }
}

resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public[local.azs[0]].id

  tags = {
    Name = var.name
  }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }

  tags = {
    Name = "${var.name}-public"
  }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id

  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this.id
  }

  tags = {
    Name = "${var.name}-private"
  }
}

resource "aws_route_table_association" "public" {
  for_each = aws_subnet.public

  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "private" {
  for_each = aws_subnet.private

  subnet_id      = each.value.id
  route_table_id = aws_route_table.private.id
}

# -- IAM ----------------------------------------------------------------------------------------------------------

locals {
  service_principals = {
    cluster = "eks.amazonaws.com"
    nodes   = "ec2.amazonaws.com"
    pods    = "pods.eks.amazonaws.com" # EKS Pod Identity
  }

  node_policies = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])
}

data "aws_iam_policy_document" "assume" {
  for_each = local.service_principals

  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = [each.value]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${local.iam_prefix}-cluster"
  assume_role_policy = data.aws_iam_policy_document.assume["cluster"].json
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_iam_role" "nodes" {
  name               = "${local.iam_prefix}-nodes"
  assume_role_policy = data.aws_iam_policy_document.assume["nodes"].json
}

resource "aws_iam_role_policy_attachment" "nodes" {
  for_each = local.node_policies

  role       = aws_iam_role.nodes.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

resource "aws_iam_role" "ebs_csi" {
  name               = "${local.iam_prefix}-ebs-csi"
  assume_role_policy = data.aws_iam_policy_document.assume["pods"].json
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

# For the Kubernetes cluster autoscaler (service account kube-system/cluster-autoscaler), which resizes the user and
# GPU node groups: EKS managed node groups do not scale by themselves.
resource "aws_iam_role" "cluster_autoscaler" {
  name               = "${local.iam_prefix}-autoscaler"
  assume_role_policy = data.aws_iam_policy_document.assume["pods"].json
}

data "aws_iam_policy_document" "cluster_autoscaler" {
  statement {
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
      "eks:DescribeNodegroup",
    ]
    resources = ["*"]
  }

  statement {
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name   = "cluster-autoscaler"
  role   = aws_iam_role.cluster_autoscaler.id
  policy = data.aws_iam_policy_document.cluster_autoscaler.json
}

# -- cluster ------------------------------------------------------------------------------------------------------

resource "aws_eks_cluster" "this" {
  name     = var.name
  role_arn = aws_iam_role.cluster.arn

  # Whoever creates the cluster (the credentials in the environment) becomes its administrator.
  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  vpc_config {
    subnet_ids              = values(aws_subnet.private)[*].id
    endpoint_private_access = true
    endpoint_public_access  = true
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator"]

  upgrade_policy {
    support_type = "STANDARD"
  }

  lifecycle {
    precondition {
      condition     = var.user_min_nodes <= var.user_max_nodes
      error_message = "user_min_nodes (${var.user_min_nodes}) cannot exceed user_max_nodes (${var.user_max_nodes})."
    }

    precondition {
      condition     = !var.gpu_enabled || var.gpu_max_nodes >= 1
      error_message = "A GPU node group needs gpu_max_nodes of at least 1; set gpu_enabled = false for none."
    }
  }

  depends_on = [aws_iam_role_policy_attachment.cluster]
}

# The core group has a fixed size, so Terraform owns its desired size. It stays in one zone: the hub's database
# volume (EBS) can only attach to nodes in the zone where it was created.
resource "aws_eks_node_group" "core" {
  cluster_name           = aws_eks_cluster.this.name
  node_group_name_prefix = "core-"
  node_role_arn          = aws_iam_role.nodes.arn
  subnet_ids             = [aws_subnet.private[local.azs[0]].id]
  instance_types         = [var.core_machine_type]
  ami_type               = "AL2023_x86_64_STANDARD"
  disk_size              = 50

  labels = {
    (local.purpose_label) = "core"
  }

  scaling_config {
    desired_size = var.core_node_count
    min_size     = var.core_node_count
    max_size     = var.core_node_count
  }

  update_config {
    max_unavailable = 1
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_iam_role_policy_attachment.nodes, aws_route_table_association.private]
}

resource "aws_eks_node_group" "autoscaled" {
  for_each = local.autoscaled_groups

  cluster_name           = aws_eks_cluster.this.name
  node_group_name_prefix = "${each.key}-"
  node_role_arn          = aws_iam_role.nodes.arn
  subnet_ids             = values(aws_subnet.private)[*].id
  instance_types         = [each.value.instance_type]
  ami_type               = each.value.ami_type
  disk_size              = 100

  labels = {
    (local.purpose_label) = "user"
  }

  taint {
    key    = each.value.taint.key
    value  = each.value.taint.value
    effect = each.value.taint.effect
  }

  scaling_config {
    desired_size = each.value.min_size
    min_size     = each.value.min_size
    max_size     = each.value.max_size
  }

  update_config {
    max_unavailable = 1
  }

  lifecycle {
    create_before_destroy = true
    # The cluster autoscaler owns the current size.
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.nodes, aws_route_table_association.private]
}

resource "aws_eks_addon" "pod_identity_agent" {
  cluster_name = aws_eks_cluster.this.name
  addon_name   = "eks-pod-identity-agent"

  depends_on = [aws_eks_node_group.core]
}

# Volumes for the hubs' databases (EBS); EKS has no in-tree volume provisioner.
resource "aws_eks_addon" "ebs_csi" {
  cluster_name = aws_eks_cluster.this.name
  addon_name   = "aws-ebs-csi-driver"

  pod_identity_association {
    role_arn        = aws_iam_role.ebs_csi.arn
    service_account = "ebs-csi-controller-sa"
  }

  depends_on = [aws_eks_addon.pod_identity_agent, aws_iam_role_policy_attachment.ebs_csi]
}

resource "aws_eks_pod_identity_association" "cluster_autoscaler" {
  cluster_name    = aws_eks_cluster.this.name
  namespace       = "kube-system"
  service_account = "cluster-autoscaler"
  role_arn        = aws_iam_role.cluster_autoscaler.arn
}

# -- home storage -------------------------------------------------------------------------------------------------

resource "aws_efs_file_system" "home" {
  creation_token   = "${var.name}-home"
  encrypted        = true
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"

  lifecycle_policy {
    transition_to_ia = "AFTER_30_DAYS"
  }

  lifecycle_policy {
    transition_to_primary_storage_class = "AFTER_1_ACCESS"
  }

  tags = {
    Name = "${var.name}-home"
  }
}

resource "aws_efs_backup_policy" "home" {
  file_system_id = aws_efs_file_system.home.id

  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_security_group" "efs" {
  name        = "${var.name}-efs"
  description = "NFS from the cluster's nodes to the home file system"
  vpc_id      = aws_vpc.this.id

  tags = {
    Name = "${var.name}-efs"
  }
}

# Managed node groups without a launch template run in the cluster security group.
resource "aws_vpc_security_group_ingress_rule" "efs_from_nodes" {
  security_group_id            = aws_security_group.efs.id
  referenced_security_group_id = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  description                  = "NFS from the EKS nodes"
}

resource "aws_efs_mount_target" "home" {
  for_each = aws_subnet.private

  file_system_id  = aws_efs_file_system.home.id
  subnet_id       = each.value.id
  security_groups = [aws_security_group.efs.id]
}

# -- access -------------------------------------------------------------------------------------------------------

locals {
  # Authenticates with whatever AWS credentials the caller has, through `aws eks get-token`.
  kubeconfig = yamlencode({
    apiVersion        = "v1"
    kind              = "Config"
    preferences       = {}
    "current-context" = var.name
    clusters = [{
      name = var.name
      cluster = {
        server                       = aws_eks_cluster.this.endpoint
        "certificate-authority-data" = aws_eks_cluster.this.certificate_authority[0].data
      }
    }]
    contexts = [{
      name = var.name
      context = {
        cluster = var.name
        user    = var.name
      }
    }]
    users = [{
      name = var.name
      user = {
        exec = {
          apiVersion = "client.authentication.k8s.io/v1beta1"
          command    = "aws"
          args       = ["eks", "get-token", "--cluster-name", aws_eks_cluster.this.name, "--region", var.region, "--output", "json"]
        }
      }
    }]
  })
}
