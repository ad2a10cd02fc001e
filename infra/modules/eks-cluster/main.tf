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

data "aws_caller_identity" "current" {}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:The first three zones by name are taken; AWS gives a region's new zones later names, so a new zone does not move the subnets. The list keys the subnets, so it must be known when planning and cannot be pinned in state as the GKE module pins its zone.
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  partition = data.aws_partition.current.partition
  account   = data.aws_caller_identity.current.account_id

  # The log group EKS writes the control plane's logs to; created here so that it has a retention and a key.
  log_group = "/aws/eks/${var.name}/cluster"

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
  #checkov:skip=CKV2_AWS_11:VPC flow logs are billed per GB and nothing in hubfleet reads them; the audit trail hubs need is the control plane's (enabled_cluster_log_types on the cluster).
  cidr_block           = local.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = var.name
  }
}

# Nothing uses the VPC's default security group; without rules it admits and sends nothing.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_subnet" "public" {
  for_each = local.public_subnets

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  # Only the NAT gateway (an Elastic IP) and load balancers live here; nothing launched here needs an address.
  map_public_ip_on_launch = false

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
  # These actions take no resource: AWS only grants them on "*".
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
    ]
    resources = ["*"]
  }

  statement {
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${local.partition}:eks:${var.region}:${local.account}:nodegroup/${var.name}/*/*"]
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

# -- secrets encryption and control-plane logs ---------------------------------------------------------------------

# One customer key encrypts the cluster's Secrets in etcd (the hubs' values and tokens) and its control-plane logs.
data "aws_iam_policy_document" "cluster_key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" is the key itself; this statement is AWS's default key policy, which lets the account's IAM policies grant use of the key.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" is the key itself; this statement is AWS's default key policy, which lets the account's IAM policies grant use of the key.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" is the key itself; this statement is AWS's default key policy, which lets the account's IAM policies grant use of the key.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }

  statement {
    sid       = "ControlPlaneLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account}:log-group:${local.log_group}"]
    }
  }
}

resource "aws_kms_key" "cluster" {
  description             = "Secrets and control-plane logs of EKS cluster ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.cluster_key.json
}

data "aws_iam_policy_document" "cluster_key_use" {
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"]
    resources = [aws_kms_key.cluster.arn]
  }
}

resource "aws_iam_role_policy" "cluster_key_use" {
  name   = "cluster-key"
  role   = aws_iam_role.cluster.id
  policy = data.aws_iam_policy_document.cluster_key_use.json
}

resource "aws_cloudwatch_log_group" "cluster" {
  name              = local.log_group
  retention_in_days = 365
  kms_key_id        = aws_kms_key.cluster.arn
}

# -- cluster ------------------------------------------------------------------------------------------------------

resource "aws_eks_cluster" "this" {
  #checkov:skip=CKV_AWS_38:The default api_authorized_ranges (0.0.0.0/0) keeps a new cluster reachable from wherever the console runs, whose address the module cannot know; the wizard asks for narrower ranges and they become public_access_cidrs.
  #checkov:skip=CKV_AWS_39:The console reaches the API server over the internet, so the public endpoint stays; public_access_cidrs (api_authorized_ranges) limits who can connect and nodes use the private endpoint.
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
    public_access_cidrs     = var.api_authorized_ranges
  }

  encryption_config {
    resources = ["secrets"]

    provider {
      key_arn = aws_kms_key.cluster.arn
    }
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

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

  depends_on = [aws_iam_role_policy_attachment.cluster, aws_iam_role_policy.cluster_key_use, aws_cloudwatch_log_group.cluster]
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

# The VPC CNI as a managed add-on, with its network policy agent on: without it NetworkPolicies are stored but not
# enforced. OVERWRITE takes over the copy EKS installs by itself in a new cluster.
resource "aws_eks_addon" "vpc_cni" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "vpc-cni"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  configuration_values = jsonencode({
    enableNetworkPolicy = "true"
  })
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
  #checkov:skip=CKV_AWS_184:Encrypted at rest with the AWS-managed key; moving an existing file system to another key replaces it, and with it every user's home directory.
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
