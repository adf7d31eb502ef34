package local.kitekafka.configindex;

import apicurio.common.app.components.config.index.DynamicPropertiesInfoRecorder;
import io.apicurio.common.apps.config.DynamicConfigPropertyDef;
import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import io.quarkus.arc.deployment.SyntheticBeanBuildItem;
import io.quarkus.deployment.annotations.BuildStep;
import io.quarkus.deployment.annotations.ExecutionTime;
import io.quarkus.deployment.annotations.Record;
import io.quarkus.deployment.builditem.CombinedIndexBuildItem;
import io.quarkus.deployment.builditem.FeatureBuildItem;
import javax.inject.Singleton;
import java.util.ArrayList;
import java.util.List;
import org.jboss.jandex.AnnotationInstance;
import org.jboss.jandex.AnnotationTarget;
import org.jboss.jandex.AnnotationValue;
import org.jboss.jandex.DotName;
import org.jboss.jandex.Type;

/**
 * Finds every configuration field marked {@code @Dynamic} (a setting that may change while the registry
 * runs) and hands their definitions to the runtime as a {@link DynamicConfigPropertyList} bean.
 */
public class ConfigIndexSteps {

    private static final DotName DYNAMIC = DotName.createSimple("io.apicurio.common.apps.config.Dynamic");
    private static final DotName CONFIG_PROPERTY =
            DotName.createSimple("org.eclipse.microprofile.config.inject.ConfigProperty");

    @BuildStep
    FeatureBuildItem feature() {
        return new FeatureBuildItem("apicurio-config-index");
    }

    @BuildStep
    @Record(ExecutionTime.STATIC_INIT)
    SyntheticBeanBuildItem dynamicProperties(CombinedIndexBuildItem index, DynamicPropertiesInfoRecorder recorder)
            throws ClassNotFoundException {
        List<DynamicConfigPropertyDef> defs = new ArrayList<>();
        for (AnnotationInstance dynamic : index.getIndex().getAnnotations(DYNAMIC)) {
            if (dynamic.target().kind() != AnnotationTarget.Kind.FIELD) {
                continue;
            }
            var field = dynamic.target().asField();
            AnnotationInstance config = field.annotation(CONFIG_PROPERTY);
            if (config == null) {
                continue;
            }
            AnnotationValue fallback = config.value("defaultValue");
            DynamicConfigPropertyDef def = new DynamicConfigPropertyDef(
                    config.value("name").asString(), valueType(field.type()),
                    fallback == null ? null : fallback.asString());
            def.setLabel(text(dynamic, "label"));
            def.setDescription(text(dynamic, "description"));
            AnnotationValue requires = dynamic.value("requires");
            def.setRequires(requires == null ? new String[0] : requires.asStringArray());
            defs.add(def);
        }
        return SyntheticBeanBuildItem.configure(DynamicConfigPropertyList.class)
                .scope(Singleton.class)
                .runtimeValue(recorder.initializePropertiesInfo(defs))
                .unremovable()
                .done();
    }

    /** The type of the value: {@code Supplier<Boolean>} holds a Boolean, a plain field its own type. */
    private static Class<?> valueType(Type type) throws ClassNotFoundException {
        Type value = type.kind() == Type.Kind.PARAMETERIZED_TYPE
                ? type.asParameterizedType().arguments().get(0)
                : type;
        String name = value.name().toString();
        switch (name) {
            case "boolean": return Boolean.class;
            case "int": return Integer.class;
            case "long": return Long.class;
            default:
                return Class.forName(name, false, Thread.currentThread().getContextClassLoader());
        }
    }

    private static String text(AnnotationInstance annotation, String member) {
        AnnotationValue value = annotation.value(member);
        return value == null ? null : value.asString();
    }
}
