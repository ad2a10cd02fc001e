# Credentials come from the environment (GOOGLE_CREDENTIALS), never from variables.
provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    hubfleet-cluster = var.name
    managed-by       = "terraform"
  }
}

locals {
  apis = toset([
    "compute.googleapis.com",
    "container.googleapis.com",
    "file.googleapis.com",
    "iam.googleapis.com",
  ])

  cidr = {
    nodes         = "10.10.0.0/20"
    pods          = "10.16.0.0/14"
    services      = "10.20.0.0/20"
    control_plane = "172.16.0.0/28"
    filestore     = "172.16.0.16/29"
  }

  # The zone that holds the node pools and the (zonal) Filestore instance, fixed when the cluster is created.
  zone = terraform_data.zone.output

  # Filestore BASIC_HDD instances hold 1 TiB to 63.9 TiB.
  filestore_min_gb = 1024
  filestore_max_gb = 65433
  home_capacity_gb = max(var.home_storage_gb, local.filestore_min_gb)

  node_roles = toset([
    "roles/container.defaultNodeServiceAccount",
    "roles/artifactregistry.reader",
  ])

  # 0.0.0.0/0 among the ranges admits any address: then the control plane keeps no authorized-networks list.
  api_open = contains(var.api_authorized_ranges, "0.0.0.0/0")

  purpose_label = "hub.jupyter.org/node-purpose"
  user_taint    = { key = "hub.jupyter.org/dedicated", value = "user", effect = "NO_SCHEDULE" }
  gpu_taint     = { key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }

  # Fixed-size pools set node_count; autoscaled pools set autoscaling = { min, max }.
  node_pools = merge(
    {
      core = {
        purpose      = "core"
        machine_type = var.core_machine_type
        disk_size_gb = 50
        node_count   = var.core_node_count
        autoscaling  = null
        taints       = []
        accelerator  = null
      }
      user = {
        purpose      = "user"
        machine_type = var.user_machine_type
        disk_size_gb = 100
        node_count   = null
        autoscaling  = { min = var.user_min_nodes, max = var.user_max_nodes }
        taints       = [local.user_taint]
        accelerator  = null
      }
    },
    var.gpu_enabled ? {
      gpu = {
        purpose      = "user"
        machine_type = var.gpu_machine_type
        disk_size_gb = 100
        node_count   = null
        autoscaling  = { min = 0, max = var.gpu_max_nodes }
        taints       = [local.gpu_taint]
        accelerator  = var.gpu_accelerator_type
      }
    } : {},
  )
}

resource "google_project_service" "this" {
  for_each = local.apis

  service            = each.value
  disable_on_destroy = false
}

data "google_compute_zones" "available" {
  region = var.region

  depends_on = [google_project_service.this]
}

# Pinned in state: a later change in the region's zone list must not move the home storage (a replacement).
resource "terraform_data" "zone" {
  input = data.google_compute_zones.available.names[0]

  lifecycle {
    ignore_changes = [input]
  }
}

# -- network ------------------------------------------------------------------------------------------------------

resource "google_compute_network" "this" {
  #checkov:skip=CKV2_GCP_18:The network's only ingress rules are the ones GKE writes for its nodes and control plane; the implied deny-all ingress rule covers everything else, so a rule of our own would repeat it.
  name                    = var.name
  auto_create_subnetworks = false

  depends_on = [google_project_service.this]
}

resource "google_compute_subnetwork" "nodes" {
  #checkov:skip=CKV_GCP_26:VPC flow logs are billed per GB of log and nothing in hubfleet reads them; the audit trail hubs need is the control plane's (Cloud Audit Logs, on by default).
  name                     = "${var.name}-nodes"
  network                  = google_compute_network.this.id
  region                   = var.region
  ip_cidr_range            = local.cidr.nodes
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = local.cidr.pods
  }

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = local.cidr.services
  }
}

# Nodes have private addresses only; Cloud NAT lets them pull images from outside Google.
resource "google_compute_router" "this" {
  name    = var.name
  network = google_compute_network.this.id
  region  = var.region
}

resource "google_compute_router_nat" "this" {
  name                               = var.name
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# -- cluster ------------------------------------------------------------------------------------------------------

resource "google_service_account" "nodes" {
  account_id   = "${substr(var.name, 0, 24)}-nodes"
  display_name = "Nodes of GKE cluster ${var.name}"

  depends_on = [google_project_service.this]
}

resource "google_project_iam_member" "nodes" {
  for_each = local.node_roles

  project = var.project_id
  role    = each.value
  member  = google_service_account.nodes.member
}

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_21:Every resource, the cluster included, gets its labels from the provider's default_labels, which checkov does not read.
  #checkov:skip=CKV_GCP_61:Intranode visibility exists to write VPC flow logs for pod-to-pod traffic, which the subnet does not keep (see CKV_GCP_26); NetworkPolicies are enforced by Dataplane V2 either way.
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Google Workspace domain with a gke-security-groups group, which an institution may not have; the console reaches the cluster as its own service account.
  #checkov:skip=CKV_GCP_66:Hub images come from the registries an institution allows (the policy's allowed_registries guardrail), not from a pipeline that signs attestations, so Binary Authorization would have nothing to verify.
  name     = var.name
  location = var.region # regional control plane

  node_locations = [local.zone]

  network    = google_compute_network.this.self_link
  subnetwork = google_compute_subnetwork.nodes.self_link

  # The default pool is replaced by the pools below.
  remove_default_node_pool = true
  initial_node_count       = 1

  # The console destroys clusters it no longer needs.
  deletion_protection = false

  release_channel {
    channel = "REGULAR"
  }

  # Dataplane V2 enforces the NetworkPolicies that Zero to JupyterHub and the console create; Calico (network_policy)
  # stays off, as GKE requires with Dataplane V2.
  datapath_provider = "ADVANCED_DATAPATH"

  network_policy {
    enabled = false
  }

  # Callers authenticate with Google identities; no client certificate is ever issued.
  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  # Authorized networks: only api_authorized_ranges reach the API server, unless they include 0.0.0.0/0.
  dynamic "master_authorized_networks_config" {
    for_each = local.api_open ? [] : [var.api_authorized_ranges]

    content {
      dynamic "cidr_blocks" {
        for_each = master_authorized_networks_config.value

        content {
          cidr_block   = cidr_blocks.value
          display_name = "api-authorized-${cidr_blocks.key}"
        }
      }
    }
  }

  # The default pool lives only until the pools below exist, but it gets the same hardening as they do meanwhile.
  node_config {
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = local.cidr.control_plane
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  # Upgrades drain nodes and so stop users' servers: keep them to early Saturday and Sunday (UTC).
  maintenance_policy {
    recurring_window {
      start_time = "2025-01-04T02:00:00Z"
      end_time   = "2025-01-04T08:00:00Z"
      recurrence = "FREQ=WEEKLY;BYDAY=SA,SU"
    }
  }

  lifecycle {
    # node_config describes the removed default pool only; a change to it must not replace the cluster.
    ignore_changes = [node_config]

    precondition {
      condition     = var.user_min_nodes <= var.user_max_nodes
      error_message = "user_min_nodes (${var.user_min_nodes}) cannot exceed user_max_nodes (${var.user_max_nodes})."
    }

    precondition {
      condition     = !var.gpu_enabled || var.gpu_max_nodes >= 1
      error_message = "A GPU node pool needs gpu_max_nodes of at least 1; set gpu_enabled = false for none."
    }
  }

  depends_on = [google_project_service.this, google_project_iam_member.nodes]
}

resource "google_container_node_pool" "this" {
  for_each = local.node_pools

  name     = each.key
  cluster  = google_container_cluster.this.id
  location = var.region

  node_count         = each.value.node_count
  initial_node_count = try(each.value.autoscaling.min, null)

  dynamic "autoscaling" {
    for_each = each.value.autoscaling[*]

    content {
      min_node_count = autoscaling.value.min
      max_node_count = autoscaling.value.max
    }
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = each.value.machine_type
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-balanced"
    disk_size_gb    = each.value.disk_size_gb
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    labels = {
      (local.purpose_label) = each.value.purpose
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }

    dynamic "taint" {
      for_each = each.value.taints

      content {
        key    = taint.value.key
        value  = taint.value.value
        effect = taint.value.effect
      }
    }

    dynamic "guest_accelerator" {
      for_each = each.value.accelerator[*]

      content {
        type  = guest_accelerator.value
        count = 1

        gpu_driver_installation_config {
          gpu_driver_version = "LATEST"
        }
      }
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  lifecycle {
    # Only read when a pool is created; the autoscaler owns the size afterwards.
    ignore_changes = [initial_node_count]
  }

  depends_on = [google_project_iam_member.nodes, google_compute_router_nat.this]
}

# -- home storage -------------------------------------------------------------------------------------------------

resource "google_filestore_instance" "home" {
  name     = "${var.name}-home"
  location = local.zone
  tier     = "BASIC_HDD"

  file_shares {
    name        = "home"
    capacity_gb = local.home_capacity_gb

    nfs_export_options {
      ip_ranges   = [local.cidr.nodes, local.cidr.pods]
      access_mode = "READ_WRITE"
      squash_mode = "NO_ROOT_SQUASH"
    }
  }

  networks {
    network           = google_compute_network.this.name
    modes             = ["MODE_IPV4"]
    connect_mode      = "DIRECT_PEERING"
    reserved_ip_range = local.cidr.filestore
  }

  lifecycle {
    precondition {
      condition     = var.home_storage_gb <= local.filestore_max_gb
      error_message = "A Filestore BASIC_HDD instance holds at most ${local.filestore_max_gb} GB; ask for less home storage."
    }
  }

  depends_on = [google_project_service.this]
}

# -- access -------------------------------------------------------------------------------------------------------

locals {
  endpoint     = "https://${google_container_cluster.this.endpoint}"
  ca           = google_container_cluster.this.master_auth[0].cluster_ca_certificate
  context_name = "gke_${var.project_id}_${var.region}_${var.name}"

  # Authenticates through gke-gcloud-auth-plugin with the caller's Application Default Credentials (for a service
  # account, GOOGLE_APPLICATION_CREDENTIALS naming its key file), so no gcloud login is needed.
  kubeconfig = yamlencode({
    apiVersion        = "v1"
    kind              = "Config"
    preferences       = {}
    "current-context" = local.context_name
    clusters = [{
      name = local.context_name
      cluster = {
        server                       = local.endpoint
        "certificate-authority-data" = local.ca
      }
    }]
    contexts = [{
      name = local.context_name
      context = {
        cluster = local.context_name
        user    = local.context_name
      }
    }]
    users = [{
      name = local.context_name
      user = {
        exec = {
          apiVersion         = "client.authentication.k8s.io/v1beta1"
          command            = "gke-gcloud-auth-plugin"
          args               = ["--use_application_default_credentials"]
          provideClusterInfo = true
          installHint        = "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin"
        }
      }
    }]
  })
}
