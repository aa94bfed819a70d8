#include <vulkan/vulkan.h>

// VK_KHR_cooperative_matrix postdates Debian 12's Vulkan headers (1.3.239); these mirror the
// registry's definitions (extension 507) so the backend can query and enable it where the
// driver has it. Component and scope values are shared with VK_NV_cooperative_matrix.
#define VKF_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR 1000506000
#define VKF_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR 1000506001

typedef struct VkfCooperativeMatrixPropertiesKHR {
  VkStructureType sType;
  void *pNext;
  uint32_t MSize;
  uint32_t NSize;
  uint32_t KSize;
  int32_t AType;
  int32_t BType;
  int32_t CType;
  int32_t ResultType;
  VkBool32 saturatingAccumulation;
  int32_t scope;
} VkfCooperativeMatrixPropertiesKHR;

typedef struct VkfPhysicalDeviceCooperativeMatrixFeaturesKHR {
  VkStructureType sType;
  void *pNext;
  VkBool32 cooperativeMatrix;
  VkBool32 cooperativeMatrixRobustBufferAccess;
} VkfPhysicalDeviceCooperativeMatrixFeaturesKHR;

typedef VkResult (VKAPI_PTR *PFN_vkfGetPhysicalDeviceCooperativeMatrixPropertiesKHR)(
    VkPhysicalDevice physicalDevice, uint32_t *pPropertyCount, VkfCooperativeMatrixPropertiesKHR *pProperties);
